"""The offline CLI: `relay check` and `relay preview` on the shipped config and broken copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from relay.cli import main
from tests.conftest import ROOT, TEST_ENV, Project


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


def run(project: Project, *args: str) -> int:
    return main(
        [args[0], "--rules", str(project.rules), "--templates", str(project.templates), *args[1:]]
    )


def test_check_passes_on_shipped_config(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped rules, templates and samples pass check with exit 0."""
    assert run(project, "check", "--samples", str(project.samples)) == 0
    out, err = capsys.readouterr()
    assert out == "relay check: OK (3 rules, 3 sends, 3 sinks, 4 sample events)\n"
    assert err == ""


def test_check_warns_but_passes_without_secrets(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check needs no secrets: unset variables are warnings with their lines, exit 0."""
    monkeypatch.delenv("RESEND_API_KEY")
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    assert run(project, "check", "--samples", str(project.samples)) == 0
    err = capsys.readouterr().err
    assert f"{project.rules}:19:14: warning: environment variable RESEND_API_KEY is not set" in err
    assert (
        f"{project.rules}:24:18: warning: environment variable SLACK_WEBHOOK_URL is not set" in err
    )


def test_check_fails_with_location_on_broken_rules(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in a sink reference fails check with exit 1 and the located error."""
    project.edit_rules("- sink: slack-signups", "- sink: slack-signup")
    assert run(project, "check", "--samples", str(project.samples)) == 1
    err = capsys.readouterr().err
    assert (
        f"{project.rules}:48:15: unknown sink 'slack-signup' (did you mean 'slack-signups'?)" in err
    )
    assert err.endswith("relay check: invalid configuration\n")


def test_check_renders_templates_against_samples(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template that would fail at send time (misspelt field) fails check, located."""
    path = project.templates / "membership-sync.yaml"
    path.write_text(path.read_text().replace("data.role", "data.rol"))
    assert run(project, "check", "--samples", str(project.samples)) == 1
    err = capsys.readouterr().err
    assert (
        f"{path}:7:1: undefined variable: 'dict object' has no attribute 'rol' "
        "(rule 'membership-sync', sample organizationMembership.created.json)"
    ) in err


def test_check_refuses_slack_blocks_that_slack_refuses(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header block with mrkdwn text renders, but Slack answers invalid_blocks to every send:
    check fails, pointing at the template line that says mrkdwn."""
    path = project.templates / "signup-alert.yaml"
    header = "  - type: header\n    text:\n      type: mrkdwn\n      text: New sign-up\n"
    path.write_text(path.read_text().replace("blocks:\n", "blocks:\n" + header))
    assert run(project, "check", "--samples", str(project.samples)) == 1
    err = capsys.readouterr().err
    assert (
        f"{path}:8:1: invalid Slack blocks: blocks[0].text.type: must be plain_text, not 'mrkdwn'"
        " (rule 'signup-alert', sample user.created.json)"
    ) in err


def test_check_reports_a_broken_sample(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample that is not valid JSON is a located error."""
    project.write("samples/bad.json", '{"type": "user.created",\n  oops}')
    assert run(project, "check", "--samples", str(project.samples)) == 1
    assert f"{project.samples}/bad.json:2:3: invalid JSON" in capsys.readouterr().err


def test_check_on_missing_rules_file_is_a_clear_error(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing rules file is one clear line, not a traceback."""
    project.rules.unlink()
    assert run(project, "check") == 1
    err = capsys.readouterr().err
    assert "cannot read rules file" in err
    assert "Traceback" not in err


def test_preview_user_created(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """preview shows the email to the PRIMARY address, the Slack text, nothing for other rules."""
    assert run(project, "preview", str(project.samples / "user.created.json")) == 0
    out = capsys.readouterr().out
    assert "=== rule welcome-email -> sink email (resend)" in out
    assert "  to:       ada@example.com\n" in out
    assert "ada.old@example.org" not in out
    assert "  subject:  Welcome to Acme, Ada!\n" in out
    assert "=== rule signup-alert -> sink slack-signups (slack)" in out
    assert "  text:     New sign-up: Ada (ada@example.com)\n" in out
    assert "membership-sync" not in out
    assert out.rstrip().endswith("2 rule(s) matched, 1 did not (--explain says why)")


def test_preview_shows_the_unsubscribe_headers_of_an_email_of_a_category(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `unsubscribe:`, preview shows the List-Unsubscribe headers the email gets."""
    project.edit_rules(
        "    when: primary_email(data)\n", "    when: primary_email(data)\n    unsubscribe: news\n"
    )
    assert run(project, "preview", str(project.samples / "user.created.json")) == 0
    out = capsys.readouterr().out
    assert "  List-Unsubscribe: <https://relay.acme.example/unsubscribe/" in out
    assert "  List-Unsubscribe-Post: List-Unsubscribe=One-Click\n" in out


def test_preview_phone_only_user_skips_the_email(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user with no email address gets no welcome email; --explain says why."""
    sample = project.samples / "user.created.phone-only.json"
    assert run(project, "preview", str(sample), "--explain") == 0
    out = capsys.readouterr().out
    assert "sink email" not in out
    assert "--- rule welcome-email: not matched: condition `primary_email(data)` is false" in out
    assert "  text:     New sign-up: someone (no email address)\n" in out


def test_preview_json_output(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives scripts the rendered payloads."""
    sample = project.samples / "organizationMembership.created.json"
    assert run(project, "preview", str(sample), "--json") == 0
    results = {r["rule"]: r for r in json.loads(capsys.readouterr().out)}
    assert results["membership-sync"]["matched"] is True
    body = results["membership-sync"]["sends"][0]["payload"]["body"]
    assert body == {
        "action": "added",
        "organization_id": "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "user_id": "user_2h8op3Isl1QR7tKu5FGNfaLKEoU",
        "role": "org:member",
        "membership_id": "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "occurred_at": 1716883200,
    }
    assert results["welcome-email"]["matched"] is False


def test_preview_of_non_json_is_a_clear_error(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-JSON event file is one located error and exit 2."""
    bad = project.write("bad.json", "not json")
    assert run(project, "preview", str(bad)) == 2
    assert capsys.readouterr().err == f"{bad}:1:1: invalid JSON: Expecting value\n"


def test_every_clerk_example_is_routed_sanely(project: Project) -> None:
    """All of Clerk's published examples preview without error; each matches the expected rules."""
    from relay.config import load_config
    from relay.config.samples import preview
    from tests.conftest import CLERK_EVENTS

    config = load_config(project.rules, project.templates, env=TEST_ENV)
    expected = {
        "user.created": {"signup-alert"},  # the example has no email address: no welcome email
        "organizationMembership.created": {"membership-sync"},
        "organizationMembership.deleted": {"membership-sync"},
    }
    files = sorted(CLERK_EVENTS.glob("*.json"))
    assert len(files) == 27
    for path in files:
        event = json.loads(path.read_text())
        results = preview(config, event)
        matched = {r.rule for r in results if r.matched}
        assert matched == expected.get(event["type"], set()), path.name
        assert all(s.error is None for r in results for s in r.sends), path.name


def test_preview_into_a_closed_pipe_stops_quietly_with_141(project: Project) -> None:
    """`relay preview | head`: the reader goes away; relay exits 141 (as SIGPIPE would) and
    writes no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "relay", "preview", "--rules", str(project.rules),
             "--templates", str(project.templates), str(ROOT / "samples/user.created.json")],
            stdout=write_end, stderr=subprocess.PIPE, env={**os.environ, **TEST_ENV},
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b"")
