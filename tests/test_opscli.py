"""The delivery log and replay commands, run in-process on a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from relay.cli import main
from relay.config import load_config
from relay.delivery.worker import Runtime, Worker
from relay.sinks.base import Message
from relay.store import Attempt, DeliveryRecord, NewDelivery, NewEvent, SQLiteStore
from tests.conftest import ROOT, TEST_ENV

T = TypeVar("T")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()  # the fixed data's clock


def at_store(db: Path, work: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Run ``work`` on an opened store of ``db`` (as another process would)."""

    async def run() -> T:
        store = SQLiteStore(db)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def ingest(
    store: SQLiteStore, n: int, type: str, at: float, sends: list[tuple[str, str]]
) -> None:
    """Event ``evt_<n>`` (svix id ``msg_<n>``) with one delivery ``dlv_<n><a, b, ...>`` per
    (rule, sink) in ``sends``."""
    body = json.dumps({"type": type, "data": {"id": f"user_{n}"}}).encode()
    event = NewEvent(f"evt_{n}", "clerk", f"msg_{n}", type, at, body)
    deliveries = [
        NewDelivery(f"dlv_{n}{'abcdef'[i]}", rule, 0, sink, f"key-{n}-{i}", at)
        for i, (rule, sink) in enumerate(sends)
    ]
    await store.ingest(event, deliveries)


def tried(dlv: str, at: float, ms: float, code: int | None, error: str | None) -> Attempt:
    return Attempt(dlv, started_at=at, duration_ms=ms, status_code=code, error=error)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A welcome email that died after three attempts and its delivered Slack alert, a
    user.deleted that matched no rule, and a membership sync waiting for its retry."""
    path = tmp_path / "relay.db"

    async def seed(store: SQLiteStore) -> None:
        sends = [("welcome-email", "email"), ("signup-alert", "slack-signups")]
        await ingest(store, 1, "user.created", T0, sends)
        await store.record_retry(tried("dlv_1a", T0 + 1, 250, 500, "resend: 500 oops"), T0 + 6)
        await store.record_retry(tried("dlv_1a", T0 + 6, 300.4, 503, "resend: 503 busy"), T0 + 30)
        bad = "resend: 422 invalid `to` field"
        await store.record_dead(tried("dlv_1a", T0 + 30, 120, 422, bad), "dlv_1a", f"perm: {bad}")
        await store.record_delivered(tried("dlv_1b", T0 + 1, 80, 200, None))
        await ingest(store, 2, "user.deleted", T0 + 60, [])
        await ingest(store, 3, "organizationMembership.created", T0 + 120, [("sync", "hook")])
        await store.record_retry(tried("dlv_3a", T0 + 121, 10000, None, "timed out"), T0 + 300)

    at_store(path, seed)
    return path


def run(db: Path, *args: str) -> int:
    return main([*args, "--database", str(db)])


def deliveries(db: Path, **filters: Any) -> dict[str, DeliveryRecord]:
    rows = at_store(db, lambda s: s.list_deliveries(limit=1000, **filters))
    return {d.id: d for d in rows}


def test_events_finds_by_exact_type_and_glob(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--type takes an exact type or a glob; the table shows ids, svix ids and delivery counts."""
    assert run(db, "events", "--type", "user.created") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "SOURCE", "SVIX", "ID", "RECEIVED", "DELIVERIES"]
    assert len(lines) == 2
    assert lines[1].startswith("evt_1  user.created  clerk   msg_1    2024-05-01T12:00:00Z (")
    assert lines[1].endswith(" ago)  1 dead, 1 delivered")
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
    assert "\nno deliveries: no rule matched this event\n" in out
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


def test_replay_dead_delivery_keeps_key_and_history(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replayed dead delivery is pending and due, with the same key, its attempt history kept
    and a fresh retry budget."""
    before = deliveries(db)["dlv_1a"]
    assert run(db, "replay", "dlv_1a") == 0
    assert capsys.readouterr().out == (
        "replayed 1 deliveries (they are due now; a running `relay serve` picks them up)\n"
    )
    after = deliveries(db)
    assert after["dlv_1a"].status == "pending"
    assert after["dlv_1a"].idempotency_key == before.idempotency_key
    assert after["dlv_1a"].attempts == 0
    assert len(at_store(db, lambda s: s.list_attempts("dlv_1a"))) == 3
    assert after["dlv_1b"].status == "delivered"

    async def claim_twice(store: SQLiteStore) -> tuple[list[str], list[str]]:
        now = time.time()
        first = await store.claim_due(now, 10, 60, sink="email")
        second = await store.claim_due(now, 10, 60, sink="email")
        return [c.idempotency_key for c in first], [c.id for c in second]

    assert at_store(db, claim_twice) == (["key-1-0"], [])


def test_worker_sends_replayed_delivery_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker sends a replayed dead email once, with its original idempotency key."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    config = load_config(ROOT / "rules.yaml", ROOT / "templates", mode="check")
    path, sent = tmp_path / "relay.db", []

    class Recorder:
        async def send(self, message: Message) -> None:
            sent.append(message)

    async def seed(store: SQLiteStore) -> None:
        body = (ROOT / "samples" / "user.created.json").read_bytes()
        event = NewEvent("evt_1", "clerk", "msg_1", "user.created", T0, body)
        await store.ingest(event, [NewDelivery("dlv_1", "welcome-email", 0, "email", "k1", T0)])
        await store.record_dead(tried("dlv_1", T0, 5, 422, "bad"), "dlv_1", "permanent: bad")

    async def work(store: SQLiteStore) -> None:
        runtime = Runtime(config, {name: Recorder() for name in config.sinks})
        worker = Worker(store, lambda: runtime)
        for _ in range(3):
            await worker.tick()
            await worker.drain()

    at_store(path, seed)
    assert run(path, "replay", "dlv_1") == 0
    at_store(path, work)
    assert [(m.delivery_id, m.idempotency_key) for m in sent] == [("dlv_1", "k1")]
    assert deliveries(path)["dlv_1"].status == "delivered"
    assert [a.number for a in at_store(path, lambda s: s.list_attempts("dlv_1"))] == [1, 2]


def test_replay_event_replays_its_undelivered_deliveries(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event id (or svix id) replays its failed and dead deliveries; --all delivered too."""
    assert run(db, "replay", "msg_1") == 0
    assert capsys.readouterr().out.startswith("replayed 1 deliveries ")
    assert {i: d.status for i, d in deliveries(db, event_id="evt_1").items()} == {
        "dlv_1a": "pending",
        "dlv_1b": "delivered",
    }
    assert run(db, "replay", "evt_1", "--all", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "selected": 1,
        "replayed": 1,
        "not_replayed": [],
    }
    assert deliveries(db)["dlv_1b"].status == "pending"


def test_replay_of_unreplayable_ids_exits_1(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown event, or a delivery id that is unknown or already pending, exits 1."""
    assert run(db, "replay", "evt_nope") == 1
    assert capsys.readouterr().err == "relay: no event evt_nope\n"
    assert run(db, "replay", "dlv_nope", "dlv_1a") == 1
    out, err = capsys.readouterr()
    assert out.startswith("replayed 1 deliveries ")
    assert err == (
        "relay: not replayed (no such delivery, already pending, or being sent right now): "
        "dlv_nope\n"
    )


def bulk_data(tmp_path: Path) -> Path:
    """Dead welcome emails and their near misses: each differs from the first in one filter."""
    path = tmp_path / "relay.db"
    rows = [  # n, status, rule, sink, minutes after T0
        (1, "dead", "welcome-email", "email", 90),  # the one to replay
        (2, "dead", "welcome-email", "email", 120),  # and this one
        (3, "dead", "welcome-email", "email", 10),  # too old for --since
        (4, "dead", "welcome-email", "slack", 90),  # another sink
        (5, "dead", "goodbye-email", "email", 90),  # another rule
        (6, "failed", "welcome-email", "email", 90),  # not dead
        (7, "delivered", "welcome-email", "email", 90),  # not dead
    ]

    async def seed(store: SQLiteStore) -> None:
        for n, status, rule, sink, minutes in rows:
            at = T0 + minutes * 60
            await ingest(store, n, "user.created", at, [(rule, sink)])
            attempt = tried(f"dlv_{n}a", at, 100, 500, "boom")
            if status == "dead":
                await store.record_dead(attempt, f"dlv_{n}a", "boom")
            elif status == "failed":
                await store.record_retry(attempt, at + 3600)
            else:
                await store.record_delivered(attempt)

    at_store(path, seed)
    return path


def test_bulk_replay_selects_exactly_the_filtered_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay --dead --sink --rule --since replays exactly the dead rows matching every filter."""
    path = bulk_data(tmp_path)
    since = "2024-05-01T13:00:00Z"
    args = ["--dead", "--sink", "email", "--rule", "welcome-email", "--since", since, "--yes"]
    assert run(path, "replay", *args) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 deliveries match; by sink: email 2\n")
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["dlv_2a", "dlv_1a"]
    assert out.splitlines()[-1].startswith("replayed 2 deliveries (they are due now;")
    statuses = {i: d.status.value for i, d in deliveries(path).items()}
    assert statuses == {
        "dlv_1a": "pending",
        "dlv_2a": "pending",
        "dlv_3a": "dead",
        "dlv_4a": "dead",
        "dlv_5a": "dead",
        "dlv_6a": "failed",
        "dlv_7a": "delivered",
    }


def test_bulk_replay_of_failed_and_dead(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--failed with --dead takes both statuses; delivered ones are never bulk-replayed."""
    path = bulk_data(tmp_path)
    assert run(path, "replay", "--dead", "--failed", "--sink", "email", "--yes", "--json") == 0
    assert json.loads(capsys.readouterr().out)["replayed"] == 5
    assert {i for i, d in deliveries(path).items() if d.status != "pending"} == {
        "dlv_4a",
        "dlv_7a",
    }


def test_bulk_replay_without_yes_and_no_tty_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --yes and with no terminal to ask on, bulk replay refuses and changes nothing."""
    path = bulk_data(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    before = deliveries(path)
    assert run(path, "replay", "--dead") == 1
    assert capsys.readouterr().err == (
        "relay: not replaying 5 deliveries unconfirmed: stdin is not a terminal (pass --yes)\n"
    )
    assert deliveries(path) == before


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "pending"), [("y\n", 0, 5), ("\n", 1, 0)])
def test_bulk_replay_asks_on_a_terminal(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    pending: int,
) -> None:
    """On a terminal bulk replay asks; only a yes replays."""
    path = bulk_data(tmp_path)
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    assert run(path, "replay", "--dead") == code
    assert "Replay 5 deliveries? [y/N] " in capsys.readouterr().out
    assert len(deliveries(path, status="pending")) == pending


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlv_1a", "--dead"], "give delivery/event ids or --dead/--failed, not both"),
        ([], "give delivery/event ids, or --dead/--failed (and filters)"),
        (["dlv_1a", "--sink", "email"], "--sink, --rule and --since select for --dead/--failed"),
        (["--dead", "--all"], "--all is for event ids"),
    ],
)
def test_replay_argument_mistakes_are_usage_errors(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Mixing ids with bulk filters (or giving neither) is an argparse error (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        run(db, "replay", *args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(f"relay replay: error: {message}\n")
