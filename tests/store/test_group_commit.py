"""Group commits: concurrent ingests and results share commits, a bad write fails alone, close()
writes what is queued, a lease that passed fences a late result."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.errors import StoreError, StoreUnavailableError
from relay.store import IngestOutcome, NewEvent, Recorded, SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.store.helpers import (
    T0,
    attempt,
    delivery,
    event,
    forbid_fallback,
    forbidden,
    ingest_one,
    postgres_only,
)

pytestmark = pytest.mark.anyio


def count_batches(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """The size of every batch relay.store.sqlite_writes's function ``name`` writes, as it
    writes."""
    import relay.store.sqlite_writes as sqlite_module

    sizes: list[int] = []
    real = getattr(sqlite_module, name)

    def counting(*args: Any) -> Any:  # wraps any of the module's batch writers
        (batch,) = [a for a in args if not isinstance(a, sqlite3.Connection)]
        sizes.append(len(batch))
        return real(*args)

    monkeypatch.setattr(sqlite_module, name, counting)
    return sizes


async def test_group_commits_are_observed(store: Store) -> None:
    """observe_commits hears of every group commit: its kind, how long it took and how many
    writes it held, for ingests and for attempt results."""
    seen: list[tuple[str, float, int]] = []
    store.observe_commits(lambda kind, seconds, writes: seen.append((kind, seconds, writes)))
    events = [event(n) for n in range(12)]
    await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in events))
    ingests = [(s, n) for kind, s, n in seen if kind == "ingest"]
    assert sum(n for _, n in ingests) == 12
    assert all(s > 0 for s, _ in ingests)
    claimed = await store.claim_due(T0, 20, 60)
    ok = [attempt(c.id, code=200, error=None) for c in claimed]
    await asyncio.gather(*(store.record_delivered(a) for a in ok))
    results = [n for kind, _, n in seen if kind == "results"]
    assert sum(results) == 12
    assert {kind for kind, _, _ in seen} <= {"ingest", "results"}


async def test_a_failing_commit_observer_never_fails_a_write(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(kind: str, seconds: float, writes: int) -> None:
        raise RuntimeError("a bug in the metrics")

    store.observe_commits(broken)
    e = event()
    assert await store.ingest(e, [delivery(e.id)]) is IngestOutcome.ACCEPTED
    assert await store.ingest(e, [delivery(e.id)]) is IngestOutcome.DUPLICATE
    assert "observing a group commit failed" in caplog.text


async def test_sqlite_writes_a_batch_with_one_statement_per_table(tmp_path: Path) -> None:
    """Each statement is a hand-over of the GIL from the store's thread to the event loop and
    back, which costs the loop more than the statement costs SQLite: a batch of up to 64 new
    events, whatever its size, is one read for duplicates, one INSERT of events and one of
    deliveries."""
    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    statements: list[str] = []
    heads: dict[int, list[str]] = {}
    try:
        await store._run("trace", lambda conn: conn.set_trace_callback(statements.append))
        first = 0
        for size in (64, 43, 7):
            statements.clear()
            events = [event(n) for n in range(first, first + size)]
            first += size
            outcomes = await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in events))
            assert {o.value for o in outcomes} == {"accepted"}
            heads[size] = [" ".join(s.split()[:3]) for s in statements]
    finally:
        await store.close()
    one_batch = ["BEGIN IMMEDIATE", "SELECT message_id FROM", "INSERT INTO events",
                 "INSERT INTO deliveries", "COMMIT"]  # fmt: skip
    assert heads == {64: one_batch, 43: one_batch, 7: one_batch}


async def test_sqlite_group_commit_batches_concurrent_ingests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingests that arrive together share one commit (far fewer commits than events), and each
    caller still gets its own outcome."""
    sizes = count_batches(monkeypatch, "ingest_batch")
    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    try:
        events = [event(n) for n in range(100)] + [event(7)]  # one duplicate among them
        outcomes = await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in events))
    finally:
        await store.close()
    assert [o.value for o in outcomes].count("duplicate") == 1
    assert sum(sizes) == 101
    assert len(sizes) < 10


async def test_a_batch_finds_every_duplicate(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """One batch of 150 ingests (on SQLite, several multi-row statements; on PostgreSQL, one)
    stores each new event with its deliveries once. Duplicates are found whether the message was
    stored by an earlier batch or earlier in the same batch, and the same message id from another
    source is new. All of it on the fast path: the one-event-at-a-time fallback never runs."""
    forbid_fallback(store, monkeypatch)

    def again(n: int, copy: int, source: str = "clerk") -> NewEvent:
        first = event(n, source=source)  # a new relay id, as every ingest makes one
        return NewEvent(f"{first.id}_{copy}", source, first.message_id, first.type, T0, first.body)

    before = [event(n) for n in range(0, 150, 10)]  # 15 stored by an earlier batch
    await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in before))
    batch = [again(n, 1) for n in range(120)]  # 12 of them stored before
    batch += [again(n, 2) for n in range(0, 120, 7)]  # 18 repeats within the batch
    batch += [again(n, 3, source="resend") for n in range(12)]  # 12 new: another source
    outcomes = await asyncio.gather(
        *(store.ingest(e, [delivery(e.id, 0), delivery(e.id, 1)]) for e in batch)
    )
    kinds = [o.value for o in outcomes]
    assert kinds[:120] == ["duplicate" if n % 10 == 0 else "accepted" for n in range(120)]
    assert kinds[120:138] == ["duplicate"] * 18
    assert kinds[138:] == ["accepted"] * 12
    stored = await store.list_events(limit=1000)
    assert len(stored) == 15 + 108 + 12
    assert {e.id for e in stored} >= {e.id for e in batch[:120] if int(e.message_id[4:]) % 10}
    deliveries = await store.list_deliveries(limit=1000)
    assert len(deliveries) == 15 + 2 * (108 + 12)
    assert {d.event_id for d in deliveries} == {e.id for e in stored}


async def test_one_bad_event_in_a_batch_fails_alone(store: Store) -> None:
    """An event that violates a constraint on its own fails; the rest of its batch commits."""
    good, bad = event(1), event(2)
    clash = delivery(good.id)  # the bad event reuses the good one's delivery id
    results = await asyncio.gather(
        store.ingest(good, [clash]), store.ingest(bad, [clash]), return_exceptions=True
    )
    assert results[0] is IngestOutcome.ACCEPTED
    assert isinstance(results[1], StoreError)
    assert not isinstance(results[1], StoreUnavailableError)
    assert "ingest clerk message msg_2" in str(results[1])
    assert [e.id for e in await store.list_events()] == [good.id]


async def test_close_commits_ingests_still_waiting(make_store: Callable[[], Store]) -> None:
    """close() lets queued ingests commit first: nothing acknowledged is dropped."""
    store = make_store()
    await store.open()
    waiting = [asyncio.ensure_future(store.ingest(event(n), [])) for n in range(20)]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.result() is IngestOutcome.ACCEPTED for t in waiting)
    reopened = make_store()
    await reopened.open()
    try:
        assert len(await reopened.list_events(limit=100)) == 20
    finally:
        await reopened.close()


async def test_results_that_arrive_together_share_one_commit(store: Store) -> None:
    """Results recorded concurrently (a sink's sends finishing together) are written by far
    fewer transactions than results, and each is recorded as if alone."""
    sizes: list[int] = []

    def observe(kind: str, seconds: float, writes: int) -> None:
        if kind == "results":
            sizes.append(writes)

    store.observe_commits(observe)
    ids = [await ingest_one(store, n) for n in range(60)]
    await store.claim_due(T0, 100, 60)
    await asyncio.gather(
        *(store.record_delivered(attempt(i, code=200, error=None)) for i in ids[:30]),
        *(store.record_retry(attempt(i), T0 + 60) for i in ids[30:50]),
        *(store.record_dead(attempt(i, code=400), i, "400 bad request") for i in ids[50:]),
    )
    by_id = {d.id: d for d in await store.list_deliveries(limit=100)}
    numbers = [[a.number for a in await store.list_attempts(i)] for i in ids]
    assert sum(sizes) == 60
    assert len(sizes) < 10
    assert [by_id[i].status for i in ids] == ["delivered"] * 30 + ["failed"] * 20 + ["dead"] * 10
    assert all(by_id[i].attempts == 1 and by_id[i].lease_until is None for i in ids)
    assert numbers == [[1]] * 60


async def test_a_result_after_its_lease_passed_leaves_the_delivery_to_the_new_claim(
    store: Store,
) -> None:
    """A claim's lease is its fencing token: once the lease has passed and another claim holds
    the delivery, the first claim's late results are kept as attempts but do not move the
    delivery, so a stalled worker's late failure cannot undo a delivery another worker made."""
    dlv = await ingest_one(store)
    (first,) = await store.claim_due(T0, 10, lease_s=60)
    assert first.lease_until == T0 + 60
    (second,) = await store.claim_due(T0 + 61, 10, lease_s=60)  # the first lease has passed
    assert second.lease_until == T0 + 121

    lost = await store.record_retry(attempt(dlv), T0 + 200, lease=first.lease_until)
    assert lost is Recorded.LEASE_LOST
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.lease_until) == ("pending", 0, T0 + 121)  # the second's

    ok = attempt(dlv, T0 + 62, code=200, error=None)
    assert await store.record_delivered(ok, lease=second.lease_until) is Recorded.MOVED
    late = await store.record_dead(attempt(dlv), dlv, "late", lease=first.lease_until)
    assert late is Recorded.LEASE_LOST
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.lease_until, d.last_error) == ("delivered", 1, None, None)
    history = [(a.number, a.outcome) for a in await store.list_attempts(dlv)]
    assert history == [(1, "failed"), (2, "delivered"), (3, "dead")]


async def test_release_and_defer_under_a_passed_lease_leave_the_new_claim_alone(
    store: Store,
) -> None:
    dlv = await ingest_one(store)
    (first,) = await store.claim_due(T0, 10, lease_s=60)
    (second,) = await store.claim_due(T0 + 61, 10, lease_s=60)

    await store.release([dlv], lease=first.lease_until)
    await store.defer(dlv, T0 + 500, lease=first.lease_until)
    (d,) = await store.list_deliveries()
    assert (d.lease_until, d.next_attempt_at) == (second.lease_until, T0)

    await store.defer(dlv, T0 + 500, lease=second.lease_until)
    (d,) = await store.list_deliveries()
    assert (d.lease_until, d.next_attempt_at) == (None, T0 + 500)
    (third,) = await store.claim_due(T0 + 500, 10, lease_s=60)
    await store.release([dlv], lease=third.lease_until)
    (d,) = await store.list_deliveries()
    assert d.lease_until is None


async def test_one_bad_result_in_a_batch_fails_alone(store: Store) -> None:
    """A result for a delivery that does not exist fails for its caller only; the results
    committed with it are recorded."""
    good = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    results = await asyncio.gather(
        store.record_delivered(attempt(good, code=200, error=None)),
        store.record_delivered(attempt("dlv_gone", code=200, error=None)),
        return_exceptions=True,
    )
    assert results[0] is Recorded.MOVED
    assert isinstance(results[1], StoreError)
    assert not isinstance(results[1], StoreUnavailableError)
    assert "record delivered for delivery dlv_gone: no such delivery" in str(results[1])
    (d,) = await store.list_deliveries()
    assert (d.id, d.status) == (good, "delivered")
    assert await store.list_attempts("dlv_gone") == []


async def test_two_results_for_one_delivery_in_a_batch_apply_in_turn(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two results for the same delivery committed together are recorded as if one after the
    other: two numbered attempts, the attempt count 2, the second's state (on PostgreSQL by the
    batch itself, not its one-by-one fallback)."""
    if isinstance(store, PostgresStore):
        monkeypatch.setattr(store, "_record_alone", forbidden("the batch fell back"))
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    moved = await asyncio.gather(
        store.record_retry(attempt(dlv), T0 + 60),
        store.record_dead(attempt(dlv, T0 + 1, code=400), dlv, "400 bad request"),
    )
    assert list(moved) == [Recorded.MOVED, Recorded.MOVED]
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.last_error) == ("dead", 2, "400 bad request")
    numbers = [(a.number, a.outcome) for a in await store.list_attempts(dlv)]
    assert numbers == [(1, "failed"), (2, "dead")]


@postgres_only
async def test_postgres_a_result_the_database_refuses_fails_alone(store: Store) -> None:
    """A result whose row PostgreSQL refuses (a NUL in its error text) fails for its caller
    only: the batch is recorded again one result per transaction, and the others stick."""
    ids = [await ingest_one(store, n) for n in range(3)]
    await store.claim_due(T0, 10, 60)
    results = await asyncio.gather(
        store.record_delivered(attempt(ids[0], code=200, error=None)),
        store.record_retry(attempt(ids[1], error="bad\x00text"), T0 + 60),
        store.record_retry(attempt(ids[2]), T0 + 60),
        return_exceptions=True,
    )
    assert (results[0], results[2]) == (Recorded.MOVED, Recorded.MOVED)
    assert isinstance(results[1], StoreError)
    assert f"record failed for delivery {ids[1]}: " in str(results[1])
    by_id = {d.id: d for d in await store.list_deliveries()}
    assert [by_id[i].status for i in ids] == ["delivered", "pending", "failed"]
    assert [len(await store.list_attempts(i)) for i in ids] == [1, 0, 1]


async def test_a_result_batch_that_cannot_commit_fails_each_caller_by_name(tmp_path: Path) -> None:
    """When the database cannot write (here another process holds its write lock), every result
    in the batch gets a StoreUnavailableError naming its own delivery, and none is recorded."""
    store = SQLiteStore(tmp_path / "relay.db", busy_timeout_s=0.1)
    await store.open()
    blocker = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        ids = [await ingest_one(store, n) for n in range(3)]
        await store.claim_due(T0, 10, 60)
        blocker.execute("BEGIN IMMEDIATE")
        results = await asyncio.gather(
            *(store.record_delivered(attempt(i, code=200, error=None)) for i in ids),
            return_exceptions=True,
        )
        blocker.execute("ROLLBACK")
        statuses = {d.status for d in await store.list_deliveries()}
    finally:
        blocker.close()
        await store.close()
    assert all(isinstance(r, StoreUnavailableError) for r in results), results
    assert [str(r) for r in results] == [
        f"record delivered for delivery {i}: database is locked" for i in ids
    ]
    assert statuses == {"pending"}


async def test_close_records_results_still_waiting(make_store: Callable[[], Store]) -> None:
    """close() lets queued results commit first: a send that happened is not forgotten."""
    store = make_store()
    await store.open()
    ids = [await ingest_one(store, n) for n in range(10)]
    await store.claim_due(T0, 10, 60)
    waiting = [
        asyncio.ensure_future(store.record_delivered(attempt(i, code=200, error=None))) for i in ids
    ]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.result() is Recorded.MOVED for t in waiting)
    reopened = make_store()
    await reopened.open()
    try:
        assert {d.status for d in await reopened.list_deliveries()} == {"delivered"}
    finally:
        await reopened.close()
