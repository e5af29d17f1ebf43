"""`relay suppressions list/add/remove`: the suppression list from the command line, while
relay serves (a real SQLite file); addresses compared as relay compares them; remove shows
what it would remove and asks (or --yes); --json for scripts; a suppressed delivery's reason in
`relay event`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from relay.recipients.addresses import Reason, Suppression
from relay.store import DeliveryStatus, NewDelivery, NewEvent, SQLiteStore
from tests.cli.helpers import T0, Terminal, at_store, run

BOUNCED = Suppression("ada@example.com", "all", Reason.BOUNCED, "msg_b1", T0)
LEFT = Suppression("ada@example.com", "onboarding", Reason.UNSUBSCRIBED, None, T0 + 60)
COMPLAINED = Suppression("grace@example.com", "all", Reason.COMPLAINED, "msg_c1", T0 + 120)


@pytest.fixture
def listed(db: Path) -> Path:
    """The CLI's database, with ada bounced and unsubscribed from onboarding, grace complained."""

    async def seed(store: SQLiteStore) -> None:
        for suppression in (BOUNCED, LEFT, COMPLAINED):
            await store.add_suppression(suppression)

    at_store(db, seed)
    return db


def kept(db: Path) -> list[Suppression]:
    return at_store(db, lambda s: s.list_suppressions())


def test_list_shows_who_is_held_back_from_what_why_since_when_and_by_which_event(
    listed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(listed, "suppressions", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ADDRESS", "SCOPE", "REASON", "SINCE", "EVENT"]
    assert [line.split()[:3] + line.split()[-1:] for line in lines[1:]] == [
        ["grace@example.com", "all", "complained", "msg_c1"],
        ["ada@example.com", "onboarding", "unsubscribed", "-"],
        ["ada@example.com", "all", "bounced", "msg_b1"],
    ]


def test_list_filters_and_json(listed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Filters by address (as compared: any case), scope and reason; --json has every field."""
    assert run(listed, "suppressions", "list", "--address", " ADA@example.com", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["scope"], r["reason"]) for r in rows] == [
        ("onboarding", "unsubscribed"),
        ("all", "bounced"),
    ]
    assert rows[1] == {"address": "ada@example.com", "scope": "all", "reason": "bounced",
                       "event_id": "msg_b1", "created_at": "2024-05-01T12:00:00.000Z"}  # fmt: skip
    assert run(listed, "suppressions", "list", "--reason", "complained", "--json") == 0
    assert [r["address"] for r in json.loads(capsys.readouterr().out)] == ["grace@example.com"]
    assert run(listed, "suppressions", "list", "--scope", "onboarding", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_add_suppresses_normalised_addresses_and_says_what_was_there_already(
    listed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(listed, "suppressions", "add", "Bob <BOB@x.org>", "ada@example.com") == 0
    assert capsys.readouterr().out == (
        "suppressed bob@x.org (all email, manual)\n"
        "already suppressed: ada@example.com is suppressed for all email: bounced at"
        " 2024-05-01T12:00:00Z, event msg_b1\n"
    )
    [bob] = at_store(listed, lambda s: s.list_suppressions(address="bob@x.org"))
    assert (bob.scope, bob.reason, bob.event_id) == ("all", Reason.MANUAL, None)
    assert run(listed, "suppressions", "add", "c@x.org", "--scope", "newsletter", "--json") == 0
    [added] = json.loads(capsys.readouterr().out)["added"]
    assert (added["address"], added["scope"], added["reason"]) == (
        "c@x.org",
        "newsletter",
        "manual",
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [(["add", "nobody"], "not an email address: 'nobody'"),
     (["remove", "ada@example.com", "x@"], "not an email address: 'x@'"),
     (["add", "a@x.org", "--scope", "All"], "'All' is not a scope"),
     (["list", "--reason", "spam"], "invalid choice: 'spam'")],
)  # fmt: skip
def test_a_bad_address_or_scope_is_a_usage_error(
    listed: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(listed, "suppressions", *args)
    assert exited.value.code == 2
    assert error in capsys.readouterr().err
    assert len(kept(listed)) == 3


def test_remove_shows_what_it_removes_and_asks(
    listed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --yes: on a terminal it asks (no keeps everything); with no terminal it refuses."""
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert run(listed, "suppressions", "remove", "ada@example.com") == 1
    out = capsys.readouterr().out
    assert out.startswith("2 suppression(s) match:\nADDRESS")
    assert "Remove 2? [y/N]" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run(listed, "suppressions", "remove", "ada@example.com") == 1
    assert capsys.readouterr().err.endswith("stdin is not a terminal (pass --yes)\n")
    assert len(kept(listed)) == 3
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert run(listed, "suppressions", "remove", "ADA@example.com") == 0
    assert "removed 2 suppression(s): new email to these addresses goes out again" in (
        capsys.readouterr().out
    )
    assert kept(listed) == [COMPLAINED]


def test_remove_one_scope_with_yes_and_json(
    listed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["suppressions", "remove", "ada@example.com", "--scope", "onboarding", "--yes", "--json"]
    assert run(listed, *args) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1
    assert kept(listed) == [COMPLAINED, BOUNCED]


def test_removing_what_is_not_there_says_so(
    listed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(listed, "suppressions", "remove", "bob@x.org", "--yes") == 1
    assert capsys.readouterr().err == "relay: nothing to remove: no suppression matches\n"


def test_relay_event_shows_a_suppressed_deliverys_reason(
    listed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = f"suppressed: {BOUNCED.describe()}"

    async def seed(store: SQLiteStore) -> None:
        event = NewEvent("evt_9", "clerk", "msg_9", "user.created", T0, b'{"type": "user.created"}')
        await store.ingest(event, [NewDelivery("dlv_9", "welcome", 0, "email", "k9", T0)])
        [claimed] = await store.claim_due(T0, 10, 60, sink="email")
        await store.record_suppressed("dlv_9", reason, lease=claimed.lease_until)

    at_store(listed, seed)
    assert run(listed, "event", "evt_9") == 0
    out = capsys.readouterr().out
    assert f"  status:       {DeliveryStatus.SUPPRESSED}\n" in out
    assert f"  reason:       {reason}\n" in out
