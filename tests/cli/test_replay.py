"""`relay replay`: by delivery or event id, and in bulk by filter, run in-process on a real
SQLite file."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from relay.config import load_config
from relay.delivery.worker import Runtime, Worker
from relay.sinks.base import Message
from relay.store import NewDelivery, NewEvent, SQLiteStore
from tests.cli.helpers import T0, Terminal, at_store, deliveries, ingest, run, tried
from tests.conftest import ROOT, TEST_ENV


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
