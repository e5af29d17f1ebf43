"""Workflows on real `relay serve` processes: a scheduled email survives SIGKILL and a restart
and goes out once, when due; a user.deleted cancels a pending day-3 email; a burst of 200
sign-ups becomes a handful of Slack digests holding all 200, none twice, on SQLite and on two
replicas sharing PostgreSQL.

Time is driven by short delays and windows (seconds), never by sleeping for days.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.harness import (
    SLACK_PATH,
    SOURCE_PATH,
    E2EProject,
    Fleet,
    RelayProcess,
    run_cli,
    user_created,
    wait_until,
    write_rules,
)
from tests.e2e.test_replicas import PostgresProject, db_upgrade, start_fleet, stored_deliveries
from tests.e2e.upstream import EMAILS_PATH, FakeUpstream

pytestmark = pytest.mark.e2e

RULES = """\
version: 1
sources:
  clerk:
    path: {source_path}
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
    base_url: {upstream}
    retry: {{first_backoff_s: 0.2, max_backoff_s: 1}}
  slack-signups:
    type: slack
    webhook_url: ${{SLACK_WEBHOOK_URL}}
    retry: {{max_attempts: 8, first_backoff_s: 0.2, max_backoff_s: 1}}
rules:
"""
ONBOARDING = """\
  - name: onboarding
    events: user.created
    when: primary_email(data)
    cancel_on: [user.deleted]
    key: "{{{{ data.id }}}}"
    send:
      - sink: email
        template: welcome-email.yaml
        to: "{{{{ primary_email(data) }}}}"
        delay: {delay}
"""
DIGEST = """\
  - name: signup-digest
    events: user.created
    digest: {{window: {window}, max: 50}}
    send:
      - sink: slack-signups
        template: digest-ids.yaml
"""
DIGEST_TEMPLATE = """text: '{{ count }}: {{ events | map(attribute="data.id") | join(" ") }}'\n"""


def workflow_project(project: E2EProject, *rules: str) -> E2EProject:
    text = RULES.format(source_path=SOURCE_PATH, upstream=project.upstream.url) + "".join(rules)
    write_rules(project, text)
    (project.root / "templates" / "digest-ids.yaml").write_text(DIGEST_TEMPLATE, "utf-8")
    return project


def test_a_scheduled_email_survives_sigkill_and_goes_out_once_when_due(
    e2e_project: E2EProject, fleet: Fleet, upstream: FakeUpstream
) -> None:
    """The email is stored scheduled, 4 s out; the relay is SIGKILLed at once and started
    again: the email goes out once, not before it is due."""
    project = workflow_project(e2e_project, ONBOARDING.format(delay="4s"))
    relay = fleet.start(project)
    assert relay.post(user_created(project, 1)).status_code == 200
    (row,) = project.db.deliveries()
    assert row["status"] == "scheduled"
    due = row["next_attempt_at"]
    assert due - time.time() > 2  # still far enough out for the kill and the restart
    relay.kill()
    assert project.db.deliveries()[0]["status"] == "scheduled"
    fleet.start(project)
    (email,) = upstream.wait_for(EMAILS_PATH, 1, timeout_s=20)
    assert email.at + (time.time() - time.monotonic()) >= due - 0.05
    assert email.json["to"] == ["user1@example.com"]
    project.db.wait(lambda rows: rows[0]["status"] == "delivered", what="delivered")
    time.sleep(1.5)  # a second send would have come by now: the restarted worker polls at 0.5 s
    assert len(upstream.requests(EMAILS_PATH)) == 1
    assert project.db.attempts(row["id"]) == [
        {"number": 1, "status_code": 200, "error": None, "outcome": "delivered"}
    ]


def test_a_user_deleted_cancels_a_pending_day_3_email(
    e2e_project: E2EProject, fleet: Fleet, upstream: FakeUpstream
) -> None:
    """A day-3 email is scheduled; the user's deletion cancels it at once, with the reason,
    which `relay event` shows; `relay replay` will not send it unless asked."""
    project = workflow_project(e2e_project, ONBOARDING.format(delay="3d"))
    relay = fleet.start(project)
    created = user_created(project, 1)
    assert relay.post(created, msg_id="msg_created").status_code == 200
    (row,) = project.db.deliveries()
    assert row["status"] == "scheduled"
    assert row["next_attempt_at"] - time.time() > 3 * 86400 - 60
    deleted = {"type": "user.deleted", "object": "event", "data": {"id": created["data"]["id"],
                                                                   "deleted": True}}  # fmt: skip
    assert relay.post(deleted, msg_id="msg_deleted").status_code == 200
    (row,) = project.db.deliveries()
    assert row["status"] == "cancelled"
    assert row["last_error"].startswith("cancelled by user.deleted msg_deleted (evt_")
    shown = run_cli(project, "event", "msg_created")
    assert "  status:       cancelled\n" in shown.stdout
    assert "  reason:       cancelled by user.deleted msg_deleted" in shown.stdout
    refused = run_cli(project, "replay", row["id"])
    assert refused.returncode == 1
    assert "is cancelled: pass --cancelled to send it anyway" in refused.stderr
    lines = [line for line in relay.log_lines() if line.get("msg") == "event accepted"]
    assert lines[-1]["cancelled"] == [row["id"]]
    assert upstream.requests(EMAILS_PATH) == []


def burst(relays: list[RelayProcess], project: E2EProject, count: int) -> list[str]:
    """``count`` sign-ups posted at once by 10 clients, round-robin over the relays; their ids."""

    def post(n: int) -> str:
        event = user_created(project, n)
        assert relays[n % len(relays)].post(event).status_code == 200
        return str(event["data"]["id"])

    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(post, range(count)))
    print(f"{count} sign-ups posted in {time.monotonic() - started:.1f} s")
    return ids


def digested(upstream: FakeUpstream) -> tuple[list[int], Counter[str]]:
    """The Slack digests' counts, and how often each user id was in one."""
    counts, seen = [], Counter[str]()
    for request in upstream.requests(SLACK_PATH):
        head, _, ids = request.json["text"].partition(": ")
        counts.append(int(head))
        seen.update(ids.split())
        assert len(ids.split()) == int(head)
    return counts, seen


def assert_a_handful_holding_all(upstream: FakeUpstream, ids: list[str]) -> None:
    counts, seen = digested(upstream)
    assert sorted(seen) == sorted(ids), "every sign-up in a digest"
    assert max(seen.values()) == 1, "none twice"
    assert 4 <= len(counts) <= 12, counts  # max 50 a digest, and a few window ends


def test_a_burst_of_200_sign_ups_becomes_a_handful_of_digests(
    e2e_project: E2EProject, fleet: Fleet, upstream: FakeUpstream
) -> None:
    """200 sign-ups in a burst: a handful of Slack messages (at most 50 each, or the window's
    end), holding all 200, none twice."""
    project = workflow_project(e2e_project, DIGEST.format(window="2s"))
    relay = fleet.start(project)
    ids = burst([relay], project, 200)
    project.db.wait(
        lambda rows: all(r["status"] in ("delivered", "batched") for r in rows),
        timeout_s=30,
        what="every digest delivered",
    )
    time.sleep(2.5)  # any late digest would be due by now
    assert_a_handful_holding_all(upstream, ids)
    batched = [r for r in project.db.deliveries() if r["status"] == "batched"]
    assert len(batched) == 200


@pytest.fixture
def pg_project(e2e_project: E2EProject, postgres_url: str) -> PostgresProject:
    project = workflow_project(e2e_project, DIGEST.format(window="2s"))
    return PostgresProject(project.root, project.upstream, database_url=postgres_url)


def test_a_burst_of_200_sign_ups_on_two_replicas_sharing_postgresql(
    pg_project: PostgresProject, relays: list[RelayProcess], upstream: FakeUpstream
) -> None:
    """The same burst spread over two replicas on one PostgreSQL database: one open batch at a
    time (a unique row, not a lock), every sign-up in exactly one digest."""
    db_upgrade(pg_project, pg_project.database_url)
    fleet = start_fleet(pg_project, 2, relays)
    ids = burst(fleet, pg_project, 200)

    def settled() -> bool:
        rows = stored_deliveries(pg_project.database_url)
        return bool(rows) and all(r["status"] in ("delivered", "batched") for r in rows)

    wait_until("every digest delivered", settled, timeout_s=30)
    time.sleep(2.5)
    assert_a_handful_holding_all(upstream, ids)
    for relay in fleet:  # both ingested (burst posts round-robin) and both sent digests
        accepted = [line for line in relay.log_lines() if line.get("digests")]
        assert len(accepted) == 100
