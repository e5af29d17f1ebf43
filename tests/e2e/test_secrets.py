"""Secrets: every log line, stored row and CLI output of a full run of real `relay serve` and
`relay` commands, scanned for every configured secret.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.fault_rules import FAST_RETRY, event
from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    RESEND_API_KEY,
    SLACK_PATH,
    E2EProject,
    Fleet,
    free_port,
    make_project,
    run_cli,
    signed_headers,
    user_created,
    value,
    wait_until,
    with_env,
    write_rules,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, Drop, FakeUpstream

pytestmark = pytest.mark.e2e


SYNC_API_TOKEN = "sync_tok_e2e_7d1e0b44c2"
SYNC_SIGNING_SECRET = "whsec_c3luYy1zaWduaW5nLWtleS1lMmUtMDEyMzQ1Njc4OQ=="
QUERY_TOKEN = "e2e-query-token-5f3a9c"
SLACK_TOKEN = SLACK_PATH.rsplit("/", 1)[1]

SECRET_RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
    base_url: {upstream}
    retry: {retry}
  slack-signups:
    type: slack
    webhook_url: ${{SLACK_WEBHOOK_URL}}
    retry: {retry}
  membership-sync:
    type: http
    url: ${{MEMBERSHIP_SYNC_URL}}
    headers:
      Authorization: Bearer ${{SYNC_API_TOKEN}}
    signing_secret: ${{SYNC_SIGNING_SECRET}}
    timeout_s: 1
    retry: {retry}
rules:
  - name: welcome-email
    events: user.created
    when: primary_email(data)
    send:
      - sink: email
        template: welcome-email.yaml
        to: "{{{{ primary_email(data) }}}}"
  - name: signup-alert
    events: user.created
    send:
      - sink: slack-signups
        template: signup-alert.yaml
  - name: membership-sync
    events: organizationMembership.*
    send:
      - sink: membership-sync
        template: membership-sync.yaml
"""

# The same file with each secret variable in a field where it is wrong: a reload (and `relay
# check`, and a `relay serve` start) must report these without quoting the values.
BROKEN_SECRET_RULES = (
    SECRET_RULES.replace("secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}", "secret: ${{RESEND_API_KEY}}")
    .replace("webhook_url: ${{SLACK_WEBHOOK_URL}}", "webhook_url: ${{SYNC_API_TOKEN}}")
    .replace("url: ${{MEMBERSHIP_SYNC_URL}}", "url: ${{SYNC_SIGNING_SECRET}}")
    .replace("timeout_s: 1", "timeout_s: ${{SLACK_WEBHOOK_URL}}")
)


def json_answer(status: int, **body: Any) -> Answer:
    return Answer(status, body=json.dumps(body).encode())


def secrets_of(project: E2EProject) -> dict[str, str]:
    """Every configured secret, and the token inside each one that embeds a token."""
    env = project.env()
    return {
        "Svix signing secret": TEST_SECRET,
        "Svix signing key": TEST_SECRET.removeprefix("whsec_"),
        "Resend API key": RESEND_API_KEY,
        "Slack webhook URL": env["SLACK_WEBHOOK_URL"],
        "Slack webhook token": SLACK_TOKEN,
        "HTTP sink URL query token": QUERY_TOKEN,
        "HTTP sink Authorization token": SYNC_API_TOKEN,
        "HTTP sink signing secret": SYNC_SIGNING_SECRET,
        "HTTP sink signing key": SYNC_SIGNING_SECRET.removeprefix("whsec_"),
    }


def store_text(project: E2EProject) -> dict[str, str]:
    """Every table of the store as text, row by row (bytes decoded)."""
    tables = project.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    found = {}
    for table in (t["name"] for t in tables):
        rows = project.db.query(f"SELECT * FROM {table}")  # noqa: S608  (names from the schema)
        found[f"store:{table}"] = "\n".join(
            " ".join(
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in row.values()
            )
            for row in rows
        )
    return found


def hits(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{name} in {where}: ...{text[max(0, i - 60) : i + len(secret) + 20]!r}..."
        for where, text in texts.items()
        for name, secret in secrets.items()
        if (i := text.find(secret)) >= 0
    ]


def secret_project(tmp_path: Path, upstream: FakeUpstream) -> E2EProject:
    base = make_project(tmp_path / "project", upstream)
    project = with_env(
        base,
        MEMBERSHIP_SYNC_URL=f"{upstream.url}{MEMBERSHIP_PATH}?token={QUERY_TOKEN}",
        SYNC_API_TOKEN=SYNC_API_TOKEN,
        SYNC_SIGNING_SECRET=SYNC_SIGNING_SECRET,
    )
    write_rules(project, SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    return project


def test_full_run_leaks_no_configured_secret(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """A full run with a secret in every place one can be (signing secrets, an API key, a Slack
    webhook URL, an HTTP sink URL with a token in its query, an Authorization header): upstream
    errors that quote the secret back (Resend quoting the key, Slack quoting the webhook URL, the
    HTTP target quoting its Authorization header and URL), a dropped connection, a timeout,
    dead letters, a forged signature, a rejected reload with every secret variable in a wrong
    field, a SIGHUP reload, `relay serve` refusing that broken file, `relay check`, `preview`,
    `events`, `event --json --body`, `deliveries --json`, `replay`, and a SIGTERM. Every log line,
    every stored row (attempt errors, last errors, events) and every CLI output is scanned for
    every configured secret: none may appear."""
    project = secret_project(tmp_path, upstream)
    secrets = secrets_of(project)
    slack_url = project.env()["SLACK_WEBHOOK_URL"]
    sync_url = project.env()["MEMBERSHIP_SYNC_URL"]
    key_quoted = f"API key {RESEND_API_KEY} is suspended"
    bearer_quoted = f"Authorization: Bearer {RESEND_API_KEY} may not send"
    upstream.script(
        EMAILS_PATH,
        [
            json_answer(500, statusCode=500, name="application_error", message=key_quoted),
            json_answer(422, statusCode=422, name="validation_error", message=bearer_quoted),
        ],
    )
    slack_quoted = f"upstream error posting to {slack_url}".encode()
    upstream.script(
        SLACK_PATH, [Answer(500, body=slack_quoted, content_type="text/plain"), Drop(partial=True)]
    )
    sync_quoted = f"cannot reach {sync_url} (Authorization: Bearer {SYNC_API_TOKEN})".encode()
    upstream.script(
        MEMBERSHIP_PATH,
        [
            json_answer(401, error="no", authorization=f"Bearer {SYNC_API_TOKEN}", url=sync_url),
            Answer(200, delay_s=3),  # past the 1 s timeout
            Answer(503, body=sync_quoted, content_type="text/plain"),
        ],
    )
    relay = fleet.start(project)
    cli: dict[str, str] = {}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(project, *args, database=args[0] not in ("check", "preview", "serve"))
        cli[f"cli:relay {' '.join(args)}"] = done.stdout + done.stderr
        return done

    for n in range(3):
        assert relay.post(user_created(project, n)).status_code == 200
    for name in ("organizationMembership.created.json", "organizationMembership.deleted.json"):
        assert relay.post(project.sample(name)).status_code == 200
    forged = json.dumps(event("user.created")).encode()
    headers = signed_headers(forged, secret="whsec_plJ3nmyCDGBKInavdOK15jsl")
    assert relay.post(forged, headers=headers).status_code == 400
    rows = project.db.wait_idle(timeout_s=20)
    assert {r["status"] for r in rows} == {"delivered", "dead"}

    # a broken reload, then the good file again and a SIGHUP
    write_rules(project, BROKEN_SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    wait_until(
        "the reload rejected",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="failure") == 1,
    )
    write_rules(project, SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    wait_until(
        "the good file reloaded",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="success") == 2,
    )
    relay.signal(signal.SIGHUP)
    wait_until(
        "the SIGHUP reload",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="success") == 3,
    )

    # the operator's commands, while serve runs (the read-only ones side by side)
    (project.root / "broken.yaml").write_text(
        BROKEN_SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY)
    )
    serve_broken = ("serve", "--rules", "broken.yaml", "--port", str(free_port()))
    dead = project.db.query(
        "SELECT e.id FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.status = 'dead'"
    )
    commands = [
        ("check",),
        ("check", "--rules", "broken.yaml"),
        serve_broken,
        ("preview", "samples/organizationMembership.created.json"),
        ("events",),
        ("deliveries", "--json"),
        ("deliveries", "--status", "dead"),
        ("event", dead[0]["id"], "--json", "--body"),
        ("event", dead[-1]["id"]),
    ]
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(commands, pool.map(lambda args: run(*args), commands), strict=True))
    assert {args: d.returncode for args, d in done.items()} == {
        args: 1 if "broken.yaml" in args else 0 for args in commands
    }
    assert "relay: not starting" in done[serve_broken].stderr
    assert run("replay", "--dead", "--yes").returncode == 0
    project.db.wait(lambda rows: {r["status"] for r in rows} == {"delivered"}, 20, "replayed")
    relay.terminate()

    texts = {f"log:{r.log_path.name}": r.log() for r in fleet.relays if r.log_path}
    texts |= store_text(project) | cli
    found = hits(texts, secrets)
    log_lines = sum(t.count("\n") for k, t in texts.items() if k.startswith("log:"))
    attempts = project.db.query("SELECT COUNT(*) AS n, COUNT(error) AS errors FROM attempts")[0]
    print(
        f"\nsecrets scan: {len(secrets)} secrets x {log_lines} log lines, {attempts['n']} stored "
        f"attempts ({attempts['errors']} with an error), {len(rows)} deliveries, {len(cli)} CLI "
        f"outputs: secrets found: {len(found)}"
    )
    for hit in found:
        print(f"  {hit}")
    assert found == []
    # and the run did produce the errors that quoted the secrets back (redacted)
    errors = " ".join(a["error"] or "" for a in project.db.query("SELECT error FROM attempts"))
    assert errors.count("[redacted]") >= 4
    assert "config reload rejected" in relay.log()


def test_an_upstream_quoting_part_of_a_secret_leaks_nothing(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """Upstream errors that quote back only the meaningful part of a secret, as real ones do:
    a proxy's 404 page naming the Slack webhook path, an API's 401 naming the token it got (from
    the Authorization header, and from the URL's query). None of it may reach the store or logs."""
    project = secret_project(tmp_path, upstream)
    secrets = secrets_of(project)
    upstream.script(
        SLACK_PATH,
        [Answer(404, body=f"Cannot POST {SLACK_PATH}".encode(), content_type="text/html")],
    )
    upstream.script(
        MEMBERSHIP_PATH,
        [
            json_answer(401, error=f"token {SYNC_API_TOKEN} is revoked"),
            json_answer(401, error=f"unknown token {QUERY_TOKEN}"),
        ],
    )
    relay = fleet.start(project)
    assert relay.post(user_created(project, 1)).status_code == 200
    for name in ("organizationMembership.created.json", "organizationMembership.deleted.json"):
        assert relay.post(project.sample(name)).status_code == 200
    rows = project.db.wait_idle(timeout_s=15)
    assert sorted(r["status"] for r in rows) == ["dead", "dead", "dead", "delivered"]

    texts = {"log": relay.log()} | store_text(project)
    found = hits(texts, secrets)
    print(f"\nsecrets quoted in part by an upstream: secrets found: {len(found)}")
    for hit in found:
        print(f"  {hit}")
    assert found == []
