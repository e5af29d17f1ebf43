"""The delivery log commands (`relay events`, `event`, `deliveries`), run in-process on a real
SQLite file."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.cli import main
from relay.store import SQLiteStore
from tests.cli.helpers import at_store, ingest, run


def test_events_finds_by_exact_type_and_glob(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--type takes an exact type or a glob; the table shows ids, svix ids and delivery counts
    ("none" for an event no rule sends)."""
    assert run(db, "events", "--type", "user.created") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "SOURCE", "SVIX", "ID", "RECEIVED", "DELIVERIES"]
    assert len(lines) == 2
    assert lines[1].startswith("evt_1  user.created  clerk   msg_1    2024-05-01T12:00:00Z (")
    assert lines[1].endswith(" ago)  1 dead, 1 delivered")
    assert run(db, "events", "--type", "user.deleted") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(" ago)  none")
    assert run(db, "events", "--type", "user.*", "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["type"], e["deliveries"]) for e in found] == [
        ("evt_2", "user.deleted", {}),
        ("evt_1", "user.created", {"dead": 1, "delivered": 1}),
    ]
    assert found[1]["received_at"] == "2024-05-01T12:00:00.000Z"


def test_events_since_and_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since takes a duration or an ISO time; --limit keeps the newest N."""
    path, now = tmp_path / "relay.db", time.time()

    async def seed(store: SQLiteStore) -> None:
        for n, age_s in [(1, 3 * 86400), (2, 3 * 3600), (3, 600), (4, 20)]:
            await ingest(store, n, "user.created", now - age_s, [])

    at_store(path, seed)

    def ids(*args: str) -> list[str]:
        assert run(path, "events", *args, "--json") == 0
        return [e["id"] for e in json.loads(capsys.readouterr().out)]

    assert ids() == ["evt_4", "evt_3", "evt_2", "evt_1"]
    assert ids("--since", "1h") == ["evt_4", "evt_3"]
    assert ids("--since", "30s") == ["evt_4"]
    assert ids("--since", "2d") == ["evt_4", "evt_3", "evt_2"]
    assert ids("--since", datetime.fromtimestamp(now - 700, UTC).isoformat()) == ["evt_4", "evt_3"]
    assert ids("--limit", "2") == ["evt_4", "evt_3"]
    assert run(path, "events", "--type", "session.*") == 0
    assert capsys.readouterr().out == "no events\n"


def test_event_shows_deliveries_and_attempts(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`relay event ID` shows the event, its matched rules and each delivery's attempts."""
    assert run(db, "event", "evt_1") == 0
    out = capsys.readouterr().out
    head, slack, email = out.split("\n\n")
    assert head.splitlines()[:4] == [
        "event:         evt_1",
        "svix id:       msg_1",
        "source:        clerk",
        "type:          user.created",
    ]
    assert head.splitlines()[4].startswith("received:      2024-05-01T12:00:00Z (")
    assert head.splitlines()[5] == "matched rules: signup-alert, welcome-email"
    assert email.splitlines() == [
        "delivery dlv_1a",
        "  rule:         welcome-email",
        "  sink:         email",
        "  status:       dead",
        "  attempts:     3",
        "  idempotency:  key-1-0",
        "  last error:   perm: resend: 422 invalid `to` field",
        "  #  TIME                  DURATION MS  HTTP  OUTCOME  ERROR",
        "  1  2024-05-01T12:00:01Z  250          500   failed   resend: 500 oops",
        "  2  2024-05-01T12:00:06Z  300          503   failed   resend: 503 busy",
        "  3  2024-05-01T12:00:30Z  120          422   dead     resend: 422 invalid `to` field",
    ]
    assert slack.splitlines()[3:] == [
        "  status:       delivered",
        "  attempts:     1",
        "  idempotency:  key-1-1",
        "  #  TIME                  DURATION MS  HTTP  OUTCOME    ERROR",
        "  1  2024-05-01T12:00:01Z  80           200   delivered",
    ]


def test_event_waiting_delivery_shows_next_attempt(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed delivery shows when it is tried next; a missing status code shows as '-'."""
    assert run(db, "event", "evt_3") == 0
    out = capsys.readouterr().out
    assert "  next attempt: 2024-05-01T12:05:00Z (" in out
    assert "  1  2024-05-01T12:02:01Z  10000        -     failed   timed out\n" in out


def test_event_by_svix_id_with_body(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The svix message id finds the event; --body prints the stored JSON pretty."""
    assert run(db, "event", "msg_2", "--body") == 0
    out = capsys.readouterr().out
    assert out.startswith("event:         evt_2\n")
    assert "matched rules: \n" in out
    assert "\nno deliveries: no rule sends this event (" in out
    body = '{\n  "type": "user.deleted",\n  "data": {\n    "id": "user_2"\n  }\n}\n'
    assert out.endswith("\nbody:\n" + body)


def test_event_json_holds_deliveries_and_attempts(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json holds the event, matched rules, deliveries and their full attempt logs."""
    assert run(db, "event", "evt_1", "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert found["message_id"] == "msg_1"
    assert found["matched_rules"] == ["signup-alert", "welcome-email"]
    email = found["deliveries"][1]
    assert (email["id"], email["status"], email["attempts"]) == ("dlv_1a", "dead", 3)
    assert email["idempotency_key"] == "key-1-0"
    assert email["next_attempt_at"] is None
    assert [a["status_code"] for a in email["attempt_log"]] == [500, 503, 422]
    assert email["attempt_log"][1]["started_at"] == "2024-05-01T12:00:06.000Z"
    assert email["attempt_log"][1]["duration_ms"] == 300.4
    assert "body" not in found


def test_unknown_event_exits_1(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An id that names no event says so and exits 1."""
    assert run(db, "event", "evt_nope") == 1
    assert capsys.readouterr().err == "relay: no event evt_nope\n"


def test_deliveries_filters_by_status_and_sink(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deliveries --status dead --sink email lists exactly the dead email deliveries."""
    assert run(db, "deliveries", "--status", "dead", "--sink", "email") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        *("ID", "EVENT", "RULE", "SINK", "STATUS", "ATTEMPTS", "UPDATED", "LAST", "ERROR")
    ]
    assert [line.split()[:6] for line in lines[1:]] == [
        ["dlv_1a", "evt_1", "welcome-email", "email", "dead", "3"]
    ]
    assert lines[1].endswith("perm: resend: 422 invalid `to` field")
    assert run(db, "deliveries", "--status", "delivered", "--sink", "email") == 0
    assert capsys.readouterr().out == "no deliveries\n"


def test_deliveries_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json lists every matching delivery with its full state, newest first."""
    assert run(db, "deliveries", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["status"], d["sink"]) for d in rows] == [
        ("dlv_3a", "failed", "hook"),
        ("dlv_1a", "dead", "email"),
        ("dlv_1b", "delivered", "slack-signups"),
    ]
    assert rows[0]["next_attempt_at"] == "2024-05-01T12:05:00.000Z"
    assert rows[2]["delivered_at"] == "2024-05-01T12:00:01.080Z"
    assert run(db, "deliveries", "--rule", "sync", "--json") == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ["dlv_3a"]


def test_missing_database_exits_1_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database URL naming no file says so (exit 1) instead of creating an empty one."""
    missing = tmp_path / "nope.db"
    monkeypatch.setenv("RELAY_DATABASE_URL", f"sqlite:///{missing}")
    for argv in (["events"], ["event", "evt_1"], ["deliveries"], ["replay", "dlv_1"]):
        assert main(argv) == 1
        assert capsys.readouterr().err == (
            f"relay: no database at {missing} (is RELAY_DATABASE_URL right? `relay serve` "
            "creates it)\n"
        )
    assert not missing.exists()


def test_database_url_from_environment(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --database the commands read RELAY_DATABASE_URL."""
    monkeypatch.setenv("RELAY_DATABASE_URL", f"sqlite:///{db}")
    assert main(["deliveries", "--status", "failed", "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ["dlv_3a"]


@pytest.mark.parametrize("since", ["yesterday", "5x", "-1h", "2024-13-01"])
def test_bad_since_is_a_usage_error(
    db: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """A --since that is neither a duration nor an ISO time is an argparse error (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        run(db, "events", f"--since={since}")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --since: '{since}' is neither a duration (30s, 15m, 1h, 2d)" in err
    assert "Traceback" not in err
