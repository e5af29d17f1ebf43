"""`relay explain EVENT_ID` on both stores: each rule matched or why not, and each delivery's
render at send time against what the current rules render now."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import load_config
from relay.config.samples import preview
from relay.delivery.snapshot import snapshot
from relay.store import Attempt, NewDelivery, NewEvent, open_store
from tests.cli.helpers import T0
from tests.conftest import TEST_ENV, Project
from tests.store.helpers import BACKENDS

USER_CREATED = "user.created.json"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path, project: Project) -> str:
    """A store on each backend, seeded (``seed``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
    else:
        url = request.getfixturevalue("postgres_url")
    seed(url, project)
    return url


def seed(url: str, project: Project) -> None:
    """What `relay serve` would have stored for the shipped rules: a user.created whose welcome
    email died and whose Slack alert was delivered (each attempt with the render it sent), and a
    user.deleted that matched no rule."""
    config = load_config(project.rules, project.templates, env=TEST_ENV)
    body = (project.samples / USER_CREATED).read_bytes()
    renders = {
        r.rule: snapshot(s.payload or {}, config.secret_values)
        for r in preview(config, json.loads(body))
        for s in r.sends
    }
    sends = [("welcome-email", "email"), ("signup-alert", "slack-signups")]
    deliveries = [NewDelivery(f"dlv_{i}", r, 0, s, f"k{i}", T0) for i, (r, s) in enumerate(sends)]

    async def write() -> None:
        store = open_store(url)
        await store.open()
        try:
            event = NewEvent("evt_1", "clerk", "msg_1", "user.created", T0, body)
            await store.ingest(event, deliveries)
            welcome = Attempt("dlv_0", T0 + 1, 120, 422, "resend: 422", renders["welcome-email"])
            await store.record_dead(welcome, "dlv_0", "permanent error: resend: 422")
            alert = Attempt("dlv_1", T0 + 1, 80, 200, None, renders["signup-alert"])
            await store.record_delivered(alert)
            deleted = b'{"type": "user.deleted", "data": {"id": "user_1", "deleted": true}}'
            await store.ingest(NewEvent("evt_2", "clerk", "msg_2", "user.deleted", T0, deleted), [])
        finally:
            await store.close()

    asyncio.run(write())


def explain(project: Project, database: str, *args: str) -> int:
    return main(
        ["explain", *args, "--database", database, "--rules", str(project.rules),
         "--templates", str(project.templates)]
    )  # fmt: skip


Capture = pytest.CaptureFixture[str]


def test_unchanged_rules_render_the_same_message(
    project: Project, database: str, capsys: Capture
) -> None:
    """Each rule is listed, matched or with its reason; each delivery shows what it sent and
    that the current rules render the same."""
    assert explain(project, database, "evt_1") == 0
    out = capsys.readouterr().out
    assert out.startswith("event evt_1: user.created from clerk (svix id msg_1), received ")
    assert (
        "rules, as rules.yaml says now:\n"
        "  welcome-email    matched\n"
        "  signup-alert     matched\n"
        "  membership-sync  not matched: user.created does not match "
        "organizationMembership.created, organizationMembership.deleted\n"
    ) in out
    assert "\ndelivery dlv_0: welcome-email -> email (send 0), dead, 1 attempt(s), updated " in out
    assert "  last error: permanent error: resend: 422\n  sent by attempt 1:\n" in out
    assert "    subject: Welcome to Acme, Ada!\n" in out
    assert "    to: ada@example.com\n" in out
    assert out.count("  now: the same message\n") == 2


def test_a_changed_template_shows_sent_against_now(
    project: Project, database: str, capsys: Capture
) -> None:
    """After a template edit, the delivery shows the fields that differ, sent against now."""
    path = project.templates / "welcome-email.yaml"
    path.write_text(path.read_text().replace("Welcome to Acme", "Welcome aboard"))
    assert explain(project, database, "msg_1") == 0  # by svix id too
    out = capsys.readouterr().out
    assert (
        "  now, the differences (sent → now):\n"
        "    subject:\n"
        '      sent: "Welcome to Acme, Ada!"\n'
        '      now:  "Welcome aboard, Ada!"\n'
    ) in out
    assert "  now: the same message\n" in out  # the Slack alert did not change


def test_a_rule_that_no_longer_matches_says_why(
    project: Project, database: str, capsys: Capture
) -> None:
    """A delivery whose rule would not match now says so, with the reason."""
    project.edit_rules("when: primary_email(data)", "when: data.banned")
    assert explain(project, database, "evt_1") == 0
    out = capsys.readouterr().out
    assert "  welcome-email    not matched: condition `data.banned` is false: it is false\n" in out
    assert (
        "  now: the rule no longer matches: condition `data.banned` is false: it is false\n" in out
    )


def test_an_event_that_matched_no_rule(project: Project, database: str, capsys: Capture) -> None:
    """An event that matched no rule lists every rule with its reason, and no deliveries."""
    assert explain(project, database, "evt_2") == 0
    out = capsys.readouterr().out
    assert "  welcome-email    not matched: user.deleted does not match user.created\n" in out
    assert "  signup-alert     not matched: user.deleted does not match user.created\n" in out
    assert out.endswith("\nno deliveries: no rule matched this event when it arrived\n")


def test_a_rule_added_since_is_named(project: Project, database: str, capsys: Capture) -> None:
    """A rule that matches now but made no delivery when the event came is named."""
    project.edit_rules(
        "events: user.created\n    send:\n      - sink: slack",
        "events: user.*\n    send:\n      - sink: slack",
    )
    assert explain(project, database, "evt_2") == 0
    assert capsys.readouterr().out.endswith(
        "\nmatched now, but no delivery was made when the event arrived: signup-alert"
        " (rules added or changed since)\n"
    )


def test_json_output(project: Project, database: str, capsys: Capture) -> None:
    """--json gives the rules, and per delivery what was sent, what would be now, and the diff."""
    path = project.templates / "signup-alert.yaml"
    path.write_text(path.read_text().replace("New sign-up:", "Sign-up:", 1))
    assert explain(project, database, "evt_1", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["event"]["id"] == "evt_1"
    assert [r["matched"] for r in out["rules"]] == [True, True, False]
    welcome, alert = out["deliveries"]
    assert (welcome["delivery"], welcome["status"], welcome["same"]) == ("dlv_0", "dead", True)
    assert welcome["sent"]["to"] == "ada@example.com"
    assert alert["sent"]["text"] == "New sign-up: Ada (ada@example.com)"
    assert alert["now"]["text"] == "Sign-up: Ada (ada@example.com)"
    assert alert["diff"] == [
        "text:",
        '  sent: "New sign-up: Ada (ada@example.com)"',
        '  now:  "Sign-up: Ada (ada@example.com)"',
    ]
    assert out["matched_now_without_delivery"] == []


def test_an_unknown_event_is_an_error(project: Project, database: str, capsys: Capture) -> None:
    """An id that names no stored event: exit 1 and one line."""
    assert explain(project, database, "evt_nope") == 1
    assert capsys.readouterr().err == "relay: no event evt_nope\n"


def test_explain_writes_nothing(project: Project, tmp_path: Path) -> None:
    """explain only reads: the database file is byte for byte as it was."""
    url = f"sqlite:///{tmp_path}/relay.db"
    seed(url, project)
    before = (tmp_path / "relay.db").read_bytes()
    assert explain(project, url, "evt_1") == 0
    assert (tmp_path / "relay.db").read_bytes() == before
