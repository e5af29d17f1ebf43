"""The Store contract, run against every backend (add a param to ``make_store`` for a new one).

PostgreSQL tests use RELAY_TEST_POSTGRES_URL (default: the local server's ``test`` database), each
in a fresh schema of its own. Without a reachable server they skip, except under CI=true, where
that is a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

import relay.cli as cli
from relay.errors import StoreError, StoreUnavailableError
from relay.store import (
    Attempt,
    DeliveryStatus,
    IngestOutcome,
    NewDelivery,
    NewEvent,
    QueueStats,
    SQLiteStore,
    Store,
    open_store,
    redact_url,
)
from relay.store.migrations import plan
from relay.store.postgres import PostgresStore
from relay.store.postgres_sql import glob_to_regex
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio

T0 = 1_000_000.0  # the tests' clock: every time is T0 + seconds
BACKENDS = ["sqlite", "postgres"]
sqlite_only = pytest.mark.parametrize("make_store", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("make_store", ["postgres"], indirect=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of unopened stores that all share one database (each is a replica of its own:
    SQLite connection, or PostgreSQL pool)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "relay.db")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url, max_size=4)
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


def event(
    n: int = 1, *, source: str = "clerk", type: str = "user.created", at: float = T0
) -> NewEvent:
    return NewEvent(
        id=f"evt_{source}_{n}",
        source=source,
        message_id=f"msg_{n}",
        type=type,
        received_at=at,
        body=b'{"type": "%s", "n": %d}' % (type.encode(), n),
    )


def delivery(
    event_id: str, i: int = 0, *, sink: str = "slack", rule: str = "r", due: float = T0
) -> NewDelivery:
    return NewDelivery(
        id=f"dlv_{event_id}_{i}",
        rule=rule,
        send_index=i,
        sink=sink,
        idempotency_key=f"key_{event_id}_{i}",
        next_attempt_at=due,
    )


def attempt(
    delivery_id: str, at: float = T0, *, code: int | None = 500, error: str | None = "x"
) -> Attempt:
    return Attempt(delivery_id, started_at=at, duration_ms=250.0, status_code=code, error=error)


async def ingest_one(store: Store, n: int = 1) -> str:
    """Ingest event n with one delivery due at T0; returns the delivery id."""
    e = event(n)
    d = delivery(e.id)
    assert await store.ingest(e, [d]) is IngestOutcome.ACCEPTED
    return d.id


async def test_ingest_commits_event_and_deliveries_together(store, make_store):
    """An accepted event and all its deliveries are visible to another connection at once."""
    e = event()
    ds = [delivery(e.id, 0), delivery(e.id, 1, sink="email")]
    assert await store.ingest(e, ds) is IngestOutcome.ACCEPTED
    other = make_store()
    await other.open()
    try:
        assert await other.get_event(e.id) == (await store.get_event(e.id))
        got = await other.list_deliveries(event_id=e.id)
        assert sorted(d.id for d in got) == [d.id for d in ds]
        assert {d.status for d in got} == {DeliveryStatus.PENDING}
        assert {(d.attempts, d.lease_until, d.created_at) for d in got} == {(0, None, T0)}
    finally:
        await other.close()


async def test_ingest_is_all_or_nothing(store):
    """When one delivery cannot be inserted, neither the event nor any delivery is stored."""
    e = event()
    d = delivery(e.id)
    with pytest.raises(StoreError, match="ingest clerk message msg_1"):
        await store.ingest(e, [d, d])  # the same delivery id twice
    assert await store.get_event(e.id) is None
    assert await store.list_deliveries() == []
    assert await store.ingest(e, [d]) is IngestOutcome.ACCEPTED


async def test_duplicate_message_is_reported_and_adds_nothing(store):
    """A second event with the same (source, message_id) is DUPLICATE and stores nothing."""
    first = event()
    await store.ingest(first, [delivery(first.id)])
    again = NewEvent("evt_other", "clerk", first.message_id, first.type, T0 + 60, first.body)
    assert await store.ingest(again, [delivery(again.id)]) is IngestOutcome.DUPLICATE
    assert await store.get_event("evt_other") is None
    assert [d.event_id for d in await store.list_deliveries()] == [first.id]


async def test_same_message_id_from_another_source_is_new(store):
    """Deduplication is per source: the same message id from another source is accepted."""
    a, b = event(source="clerk"), event(source="billing")
    assert await store.ingest(a, [delivery(a.id)]) is IngestOutcome.ACCEPTED
    assert await store.ingest(b, [delivery(b.id)]) is IngestOutcome.ACCEPTED


async def test_claim_due_returns_due_rows_oldest_first_up_to_limit(store):
    """Only rows due by now are claimed, ordered by next_attempt_at, at most ``limit``."""
    e = event()
    dues = [T0 + 30, T0 + 10, T0 + 20, T0 + 500]
    await store.ingest(e, [delivery(e.id, i, due=due) for i, due in enumerate(dues)])
    claimed = await store.claim_due(T0 + 100, limit=2, lease_s=60)
    assert [c.id for c in claimed] == [f"dlv_{e.id}_1", f"dlv_{e.id}_2"]
    assert [c.id for c in await store.claim_due(T0 + 100, 10, 60)] == [f"dlv_{e.id}_0"]
    assert await store.claim_due(T0 + 100, 10, 60) == []


async def test_claimed_delivery_carries_the_event(store):
    """A claim joins the delivery with what rendering needs: the event's source, type and body."""
    e = event()
    d = delivery(e.id, rule="welcome", sink="email")
    await store.ingest(e, [d])
    (c,) = await store.claim_due(T0, 10, 60)
    assert (c.event_id, c.source, c.message_id, c.event_type) == (e.id, "clerk", "msg_1", e.type)
    assert (c.received_at, c.body, c.rule, c.send_index) == (T0, e.body, "welcome", 0)
    assert (c.sink, c.idempotency_key, c.attempts) == ("email", d.idempotency_key, 0)


async def test_claim_due_filters_by_sink(store):
    """With ``sink``, only deliveries to that sink are claimed."""
    e = event()
    sinks = ["slack", "email", "http"]
    await store.ingest(e, [delivery(e.id, i, sink=s) for i, s in enumerate(sinks)])
    assert await store.claim_due(T0, 10, 60, sink="other") == []
    (claimed,) = await store.claim_due(T0, 10, 60, sink="email")
    assert claimed.sink == "email"
    assert sorted(c.sink for c in await store.claim_due(T0, 10, 60)) == ["http", "slack"]


async def test_claim_due_filters_by_rule_and_orphans_are_the_rest(store):
    """``rules`` claims only those rules; ``claim_orphans`` claims what has a sink or a rule
    outside the ones given, and nothing else."""
    e = event()
    await store.ingest(
        e,
        [
            delivery(e.id, 0, sink="email", rule="welcome"),
            delivery(e.id, 1, sink="slack", rule="alert"),
            delivery(e.id, 2, sink="gone", rule="old"),
            delivery(e.id, 3, sink="email", rule="removed"),
        ],
    )
    (known,) = await store.claim_due(T0, 10, 60, rules=["welcome"])
    assert known.rule == "welcome"
    assert await store.claim_due(T0, 10, 60, rules=[]) == []
    orphans = await store.claim_orphans(
        T0, 10, 60, sinks=["email", "slack"], rules=["welcome", "alert", "old"]
    )
    assert sorted((c.sink, c.rule) for c in orphans) == [("email", "removed"), ("gone", "old")]
    assert await store.claim_orphans(T0 + 1, 10, 60, sinks=["slack"], rules=["alert"]) == []


async def test_defer_makes_a_delivery_due_later_without_an_attempt(store):
    """defer() drops the lease and moves the due time; no attempt is counted or recorded."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.defer(dlv, T0 + 30)
    assert await store.claim_due(T0 + 29, 10, 60) == []
    (c,) = await store.claim_due(T0 + 30, 10, 60)
    assert (c.id, c.attempts) == (dlv, 0)
    assert await store.list_attempts(dlv) == []


async def test_lease_hides_a_claimed_row_until_it_expires(store):
    """A leased row is not claimed again before now + lease_s, and is claimable after."""
    dlv = await ingest_one(store)
    assert [c.id for c in await store.claim_due(T0, 10, lease_s=60)] == [dlv]
    assert await store.claim_due(T0 + 59.9, 10, 60) == []
    assert [c.id for c in await store.claim_due(T0 + 60, 10, 60)] == [dlv]


async def test_retry_then_delivered_records_numbered_attempts(store):
    """Two retries and a success leave attempts 1, 2, 3 and a delivered row without lease."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.record_retry(attempt(dlv, T0, code=503, error="post to Slack: 503"), T0 + 10)
    (c,) = await store.claim_due(T0 + 10, 10, 60)
    assert c.attempts == 1
    await store.record_retry(attempt(dlv, T0 + 10, code=None, error="timeout"), T0 + 30)
    await store.claim_due(T0 + 30, 10, 60)
    await store.record_delivered(attempt(dlv, T0 + 30, code=200, error=None))
    attempts = await store.list_attempts(dlv)
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, 503, DeliveryStatus.FAILED),
        (2, None, DeliveryStatus.FAILED),
        (3, 200, DeliveryStatus.DELIVERED),
    ]
    assert attempts[0].error == "post to Slack: 503"
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.lease_until, d.last_error) == ("delivered", 3, None, None)
    assert d.delivered_at == d.updated_at == T0 + 30.25
    assert await store.claim_due(T0 + 10_000, 10, 60) == []


async def test_retry_is_due_at_next_attempt_at_and_not_before(store):
    """A failed delivery is claimable from next_attempt_at on, and not a moment earlier."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, lease_s=3600)
    await store.record_retry(attempt(dlv), T0 + 120)
    (d,) = await store.list_deliveries(status="failed")
    assert (d.next_attempt_at, d.lease_until, d.last_error) == (T0 + 120, None, "x")
    assert await store.claim_due(T0 + 119.99, 10, 60) == []
    assert [c.id for c in await store.claim_due(T0 + 120, 10, 60)] == [dlv]


async def test_record_dead_with_attempt(store):
    """A permanent failure records the attempt and dead-letters the delivery with the reason."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.record_dead(attempt(dlv, code=400), dlv, "post to Slack: 400 invalid_blocks")
    (d,) = await store.list_deliveries(status=DeliveryStatus.DEAD)
    assert (d.attempts, d.last_error, d.lease_until) == (
        1,
        "post to Slack: 400 invalid_blocks",
        None,
    )
    assert [a.outcome for a in await store.list_attempts(dlv)] == [DeliveryStatus.DEAD]
    assert await store.claim_due(T0 + 10_000, 10, 60) == []


async def test_record_dead_without_attempt(store):
    """Dead-lettering without an attempt (e.g. its sink was removed) records no attempt."""
    dlv = await ingest_one(store)
    await store.record_dead(None, dlv, "sink 'slack' no longer exists")
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.last_error) == ("dead", 0, "sink 'slack' no longer exists")
    assert await store.list_attempts(dlv) == []


async def test_recording_an_unknown_delivery_is_a_store_error(store):
    """Recording an attempt of a delivery that does not exist raises StoreError."""
    with pytest.raises(StoreError, match="record delivered for delivery dlv_nope: no such"):
        await store.record_delivered(attempt("dlv_nope"))
    assert await store.list_attempts("dlv_nope") == []


async def test_release_makes_leased_rows_due_at_once(store):
    """release() drops the given leases only, without recording an attempt."""
    e = event()
    await store.ingest(e, [delivery(e.id, 0), delivery(e.id, 1)])
    first, _ = await store.claim_due(T0, 10, 60)
    await store.release([first.id])
    assert [c.id for c in await store.claim_due(T0 + 1, 10, 60)] == [first.id]
    assert [d.attempts for d in await store.list_deliveries()] == [0, 0]
    assert await store.list_attempts(first.id) == []


@sqlite_only
async def test_release_all_leases_counts_what_it_dropped(store):
    """release_all_leases() frees every leased row and returns how many it freed."""
    e = event()
    await store.ingest(e, [delivery(e.id, i) for i in range(3)])
    await store.claim_due(T0, 2, 60)
    assert await store.release_all_leases() == 2
    assert len(await store.claim_due(T0, 10, 60)) == 3
    assert await store.release_all_leases() == 3
    assert await store.release_all_leases() == 0


async def test_replay_keeps_idempotency_key_and_history(store):
    """A replayed dead delivery is pending and due now, same key, a fresh retry budget, and
    its next attempt numbered on after the history."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.record_dead(attempt(dlv), dlv, "gave up")
    assert await store.replay([dlv, "dlv_unknown"], T0 + 500) == 1
    (d,) = await store.list_deliveries()
    assert (d.status, d.next_attempt_at, d.lease_until) == ("pending", T0 + 500, None)
    assert await store.claim_due(T0 + 499, 10, 60) == []
    (c,) = await store.claim_due(T0 + 500, 10, 60)
    assert (c.idempotency_key, c.attempts) == (f"key_{c.event_id}_0", 0)
    await store.record_delivered(attempt(dlv, T0 + 500, code=200, error=None))
    assert [a.number for a in await store.list_attempts(dlv)] == [1, 2]
    (d,) = await store.list_deliveries()
    assert d.attempts == 1


async def test_replay_skips_pending_and_in_flight_deliveries(store):
    """Pending rows and rows under a live lease are not replayed; delivered ones are."""
    e = event()
    await store.ingest(e, [delivery(e.id, i) for i in range(3)])
    leased, done, _ = await store.claim_due(T0, 3, 60)
    await store.record_delivered(attempt(done.id, code=200, error=None))
    await store.record_retry(attempt(leased.id), T0 + 1)
    await store.claim_due(T0 + 1, 1, 60)  # leased again: in flight
    ids = [d.id for d in await store.list_deliveries()]
    assert await store.replay(ids, T0 + 2) == 1
    assert (await store.list_deliveries(status="delivered")) == []


async def test_queue_stats(store):
    """due counts claimable rows, pending_total every non-final row, age the oldest due one."""
    e = event()
    dues = [T0 + 10, T0 + 20, T0 + 1000, T0 + 5, T0 + 0]
    await store.ingest(e, [delivery(e.id, i, due=due) for i, due in enumerate(dues)])
    assert await store.queue_stats(T0 - 1) == QueueStats(0, 5, None)
    done, _ = await store.claim_due(T0 + 5, 2, 60)  # due T0 + 0 and T0 + 5, leased to T0 + 65
    await store.record_delivered(attempt(done.id, code=200, error=None))
    assert await store.queue_stats(T0 + 50) == QueueStats(2, 4, 40.0)
    assert await store.queue_stats(T0 + 5 + 60) == QueueStats(3, 4, 60.0)


async def test_get_event_by_id_and_by_message_id(store):
    """get_event finds an event by relay id or by sender message id, else None."""
    e = event(7)
    await store.ingest(e, [])
    assert await store.get_event(e.id) == await store.get_event("msg_7")
    found = await store.get_event("msg_7")
    assert found is not None
    assert (found.id, found.source, found.type, found.body) == (e.id, "clerk", e.type, e.body)
    assert await store.get_event("msg_8") is None


async def test_get_event_by_message_id_shared_by_sources_is_the_latest(store):
    """Two sources may use the same message id: the latest received is found; a relay id that
    happens to equal another event's message id finds the event with that id."""
    older, newer = event(5, source="clerk", at=T0), event(5, source="resend", at=T0 + 60)
    odd = NewEvent("msg_9", "clerk", "msg_odd", "user.created", T0 + 120, b"{}")
    other = event(9, source="resend", at=T0 + 180)  # its message id is msg_9
    for e in (older, newer, odd, other):
        await store.ingest(e, [])
    found = await store.get_event("msg_5")
    assert found is not None
    assert found.id == newer.id
    found = await store.get_event("msg_9")
    assert found is not None
    assert found.id == "msg_9"


async def test_list_events_filters_by_type_glob_and_time(store):
    """list_events is newest first and filters by type glob, received_at >= since and limit."""
    kinds = ["user.created", "session.created", "user.deleted"]
    for n, kind in enumerate(kinds):
        await store.ingest(event(n, type=kind, at=T0 + n), [])
    assert [e.type for e in await store.list_events()] == kinds[::-1]
    assert [e.type for e in await store.list_events(type_glob="user.*")] == [
        "user.deleted",
        "user.created",
    ]
    assert [e.type for e in await store.list_events(since=T0 + 1)] == [
        "user.deleted",
        "session.created",
    ]
    assert [e.type for e in await store.list_events(limit=1)] == ["user.deleted"]


async def test_count_deliveries_counts_each_events_deliveries_by_status_in_one_call(store):
    """count_deliveries: per event asked for, its deliveries by status; an event without
    deliveries (or not stored) is absent; more than a chunk of ids (SQLite binds 500 at a time)
    is counted whole."""
    busy, quiet = event(1), event(2)
    await store.ingest(busy, [delivery(busy.id, i) for i in range(3)])
    await store.ingest(quiet, [])
    claimed = await store.claim_due(T0, 10, 60)
    assert len(claimed) == 3
    await store.record_delivered(attempt(claimed[0].id, code=200, error=None))
    await store.record_dead(attempt(claimed[1].id, code=400), claimed[1].id, "400")
    asked = [*(f"evt_missing_{n}" for n in range(600)), quiet.id, busy.id]
    assert await store.count_deliveries(asked) == {
        busy.id: {"delivered": 1, "dead": 1, "pending": 1}
    }
    assert await store.count_deliveries([]) == {}


async def test_list_deliveries_filters(store):
    """list_deliveries filters by status, sink, rule, event, created_at >= since and limit."""
    a, b = event(1, at=T0), event(2, at=T0 + 10)
    await store.ingest(a, [delivery(a.id, 0, sink="slack", rule="r1"), delivery(a.id, 1)])
    await store.ingest(b, [delivery(b.id, 0, sink="email", rule="r2")])
    await store.record_dead(None, f"dlv_{a.id}_1", "no")

    async def ids(**filters: object) -> list[str]:
        return [d.id for d in await store.list_deliveries(**filters)]

    assert await ids() == [f"dlv_{b.id}_0", f"dlv_{a.id}_0", f"dlv_{a.id}_1"]
    assert await ids(status="dead") == [f"dlv_{a.id}_1"]
    assert await ids(sink="slack", status="pending") == [f"dlv_{a.id}_0"]
    assert await ids(rule="r2") == await ids(event_id=b.id) == await ids(since=T0 + 5)
    assert await ids(limit=1) == [f"dlv_{b.id}_0"]
    with pytest.raises(ValueError, match="'lost' is not a valid DeliveryStatus"):
        await ids(status="lost")


async def test_purge_removes_only_old_finished_events(store):
    """purge deletes old events whose deliveries are all final; the message id is then new."""
    done, busy, young = event(1, at=T0), event(2, at=T0), event(3, at=T0 + 100)
    for e in (done, busy, young):
        await store.ingest(e, [delivery(e.id)])
    await store.record_delivered(attempt(f"dlv_{done.id}_0", code=200, error=None))
    await store.record_dead(None, f"dlv_{young.id}_0", "no")
    assert await store.purge(older_than=T0 + 50) == 1
    assert await store.get_event(done.id) is None
    assert await store.list_attempts(f"dlv_{done.id}_0") == []
    assert {d.event_id for d in await store.list_deliveries()} == {busy.id, young.id}
    assert await store.ingest(done, []) is IngestOutcome.ACCEPTED


async def test_data_survives_close_and_reopen(store, make_store):
    """What one instance committed is there after it closes and a new instance opens the file."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.record_retry(attempt(dlv), T0 + 5)
    await store.close()
    reopened = make_store()
    await reopened.open()
    try:
        assert (await reopened.get_event("msg_1")) is not None
        assert [a.number for a in await reopened.list_attempts(dlv)] == [1]
        assert await reopened.ingest(event(1), []) is IngestOutcome.DUPLICATE
    finally:
        await reopened.close()


async def test_concurrent_ingests_commit_and_dedupe_exactly_once(store):
    """200 concurrent ingests of 150 message ids: 150 accepted, 50 duplicates, nothing lost."""
    calls = []
    for i in range(200):
        n = i % 150
        e = NewEvent(f"evt_{i}", "clerk", f"msg_{n}", "user.created", T0 + i, b"{}")
        calls.append(store.ingest(e, [delivery(e.id, 0), delivery(e.id, 1)]))
    outcomes = await asyncio.gather(*calls)
    accepted = [i % 150 for i, o in enumerate(outcomes) if o is IngestOutcome.ACCEPTED]
    assert sorted(accepted) == list(range(150))
    assert outcomes.count(IngestOutcome.DUPLICATE) == 50
    assert len(await store.list_events(limit=1000)) == 150
    assert len(await store.list_deliveries(limit=1000)) == 300


async def test_a_closed_store_refuses_work(store):
    """Calls after close() raise StoreError instead of touching a closed connection."""
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


@pytest.mark.parametrize(
    ("glob", "types"),
    [
        ("user.*", ["user.created", "user.deleted"]),
        ("*.created", ["email.created", "session.created", "user.created"]),
        ("user.?reated", ["user.created"]),
        ("[su]*.created", ["session.created", "user.created"]),
        ("[^u]*", ["email.created", "session.created", "[x]+(y)$"]),
        ("*[a-e]", ["email.created", "session.created", "user.created", "user.deleted"]),
        ("[]x[]*", ["[x]+(y)$"]),
        ("[x]+(y)$", []),
        ("?x]+(y)$", ["[x]+(y)$"]),
        ("User.*", []),
        ("user.created[", []),
        ("", []),
    ],
)
async def test_list_events_type_glob_is_sqlite_glob(store, glob, types):
    """type_glob has SQLite GLOB semantics on every backend: * ? [set] [^set], case-sensitive."""
    kinds = ["user.created", "session.created", "user.deleted", "email.created", "[x]+(y)$"]
    for n, kind in enumerate(kinds):
        await store.ingest(event(n, type=kind, at=T0 + n), [])
    assert sorted(e.type for e in await store.list_events(type_glob=glob)) == sorted(types)


# Schema versions, on every backend.


async def test_open_creates_the_schema_of_a_new_database(make_store):
    """open() gives an empty database the current schema; upgrade() then has nothing to do."""
    store = make_store()
    await store.open()
    try:
        assert await store.upgrade() == (3, 3)
        assert await store.ingest(event(), []) is IngestOutcome.ACCEPTED
    finally:
        await store.close()


async def test_open_without_create_refuses_a_new_database(make_store):
    """open(create=False) on a database without the schema says to run `relay db upgrade`."""
    store = make_store()
    with pytest.raises(
        StoreError, match=r"database schema is version 0, relay needs 3: run `relay db upgrade`"
    ):
        await store.open(create=False)
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


async def test_upgrade_creates_then_reports_up_to_date(make_store):
    """upgrade() on a closed store creates the schema (0 -> 3), then finds it current (3 -> 3)."""
    assert await make_store().upgrade() == (0, 3)
    assert await make_store().upgrade() == (3, 3)
    store = make_store()
    await store.open(create=False)
    await store.close()


async def test_replicas_opening_a_new_database_at_once_create_the_schema_once(make_store):
    """Several replicas starting together on an empty database: one creates the schema, the
    others wait for it and find it done; all of them work."""
    replicas = [make_store() for _ in range(4)]
    opened = await asyncio.gather(*(r.open() for r in replicas), return_exceptions=True)
    try:
        assert opened == [None] * 4
        # the same message reaching each replica: each gives it its own relay id, as ingest does
        copies = [dataclasses.replace(event(), id=f"evt_replica_{i}") for i in range(4)]
        outcomes = await asyncio.gather(
            *(r.ingest(c, []) for r, c in zip(replicas, copies, strict=True))
        )
        assert sorted(o.value for o in outcomes) == ["accepted"] + ["duplicate"] * 3
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.parametrize(
    ("found", "create", "upgrade", "steps"),
    [
        (3, False, False, []),
        (0, True, False, [0, 1, 2]),
        (0, False, True, [0, 1, 2]),
        (1, False, True, [1, 2]),
        (2, True, True, [2]),
    ],
)
def test_plan_lists_the_steps_to_apply(found, create, upgrade, steps):
    """At the needed version: nothing to do; a new database: every step; upgrade: the rest."""
    assert list(plan(found, 3, create=create, upgrade=upgrade, what="open x")) == steps


@pytest.mark.parametrize(
    ("found", "create", "message"),
    [
        (0, False, "open x: database schema is version 0, relay needs 3: run `relay db upgrade`"),
        (1, True, "open x: database schema is version 1, relay needs 3: run `relay db upgrade`"),
        (4, True, "open x: schema version 4 is newer than 3: it was written by a newer relay"),
    ],
)
def test_plan_refuses_older_without_upgrade_and_any_newer(found, create, message):
    """An older schema needs an explicit upgrade; a newer one is never touched, even to upgrade."""
    with pytest.raises(StoreError) as info:
        plan(found, 3, create=create, upgrade=False, what="open x")
    assert str(info.value).startswith(message)
    if found > 3:
        with pytest.raises(StoreError, match="newer"):
            plan(found, 3, create=True, upgrade=True, what="upgrade x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_upgrade_command(backend, request, tmp_path, capsys):
    """`relay db upgrade` creates the schema, then reports it up to date; no password shown."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
    else:
        url = request.getfixturevalue("postgres_url")
    assert cli.main(["db", "upgrade", "--database", url]) == 0
    assert cli.main(["db", "upgrade", "--database", url]) == 0
    shown = redact_url(url)
    assert capsys.readouterr().out.splitlines() == [
        f"database {shown}: upgraded from 0 to 3",
        f"database {shown}: schema version 3 (up to date)",
    ]


def test_db_upgrade_command_reports_failure_without_password(capsys):
    """An unreachable database fails `relay db upgrade` with exit 1 and a redacted URL."""
    url = "postgresql://relay:hunter2@127.0.0.1:1/relay"
    assert cli.main(["db", "upgrade", "--database", url]) == 1
    err = capsys.readouterr().err
    assert (
        "relay db upgrade: upgrade PostgreSQL store postgresql://relay:***@127.0.0.1:1/relay" in err
    )
    assert "hunter2" not in err


# SQLite specifics.


@sqlite_only
async def test_sqlite_file_is_wal_and_versioned(store, tmp_path):
    """The SQLite file is in WAL mode and carries schema version 3."""
    raw = sqlite3.connect(tmp_path / "relay.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        raw.close()


async def test_sqlite_locked_database_is_unavailable_at_ingest(tmp_path):
    """While another writer holds the lock past busy_timeout, ingest raises StoreUnavailableError
    and stores nothing; it succeeds once the lock is gone."""
    store = SQLiteStore(tmp_path / "relay.db", busy_timeout_s=0.05)
    await store.open()
    raw = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match=r"ingest clerk message msg_1: .*locked"):
            await store.ingest(event(), [delivery(event().id)])
        raw.execute("ROLLBACK")
        assert await store.get_event("msg_1") is None
        assert await store.ingest(event(), [delivery(event().id)]) is IngestOutcome.ACCEPTED
    finally:
        raw.close()
        await store.close()


async def test_sqlite_impossible_path_is_unavailable_at_open(tmp_path):
    """A database path under a regular file cannot be opened: StoreUnavailableError at open()."""
    (tmp_path / "a-file").write_text("")
    store = SQLiteStore(tmp_path / "a-file" / "relay.db")
    with pytest.raises(StoreUnavailableError, match=r"open SQLite store .*unable to open"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


async def test_sqlite_file_that_is_not_a_database_is_a_store_error(tmp_path):
    """A file that is not SQLite fails open() with StoreError, not the retryable kind."""
    (tmp_path / "relay.db").write_bytes(b"not a database" * 512)
    with pytest.raises(StoreError, match="file is not a database") as info:
        await SQLiteStore(tmp_path / "relay.db").open()
    assert not isinstance(info.value, StoreUnavailableError)


def count_batches(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """The size of every batch relay.store.sqlite_writes's function ``name`` writes, as it
    writes."""
    import relay.store.sqlite_writes as sqlite_module

    sizes: list[int] = []
    real = getattr(sqlite_module, name)

    def counting(*args: object) -> object:
        (batch,) = [a for a in args if not isinstance(a, sqlite3.Connection)]
        sizes.append(len(batch))
        return real(*args)

    monkeypatch.setattr(sqlite_module, name, counting)
    return sizes


async def test_group_commits_are_observed(store):
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


async def test_a_failing_commit_observer_never_fails_a_write(store, caplog):
    def broken(kind: str, seconds: float, writes: int) -> None:
        raise RuntimeError("a bug in the metrics")

    store.observe_commits(broken)
    e = event()
    assert await store.ingest(e, [delivery(e.id)]) is IngestOutcome.ACCEPTED
    assert await store.ingest(e, [delivery(e.id)]) is IngestOutcome.DUPLICATE
    assert "observing a group commit failed" in caplog.text


async def test_sqlite_writes_a_batch_with_one_statement_per_table(tmp_path):
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


async def test_sqlite_group_commit_batches_concurrent_ingests(tmp_path, monkeypatch):
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


def forbidden(why: str) -> Callable[..., None]:
    def fail(*args: object) -> None:
        raise AssertionError(why)

    return fail


def forbid_fallback(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ``store`` writes a batch one event at a time (its fallback)."""
    import relay.store.sqlite_writes as sqlite_module

    no_fallback = forbidden("the fast path failed and fell back")
    if isinstance(store, SQLiteStore):
        monkeypatch.setattr(sqlite_module, "_ingest_one_by_one", no_fallback)
    else:
        monkeypatch.setattr(store, "_ingest_alone", no_fallback)


async def test_a_batch_finds_every_duplicate(store, monkeypatch):
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


async def test_one_bad_event_in_a_batch_fails_alone(store):
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


async def test_close_commits_ingests_still_waiting(make_store):
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


async def test_results_that_arrive_together_share_one_commit(store):
    """Results recorded concurrently (a sink's sends finishing together) are written by far
    fewer transactions than results, and each is recorded as if alone."""
    sizes: list[int] = []
    store.observe_commits(lambda kind, seconds, writes: kind == "results" and sizes.append(writes))
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


async def test_a_result_after_its_lease_passed_leaves_the_delivery_to_the_new_claim(store):
    """A claim's lease is its fencing token: once the lease has passed and another claim holds
    the delivery, the first claim's late results are kept as attempts but do not move the
    delivery, so a stalled worker's late failure cannot undo a delivery another worker made."""
    dlv = await ingest_one(store)
    (first,) = await store.claim_due(T0, 10, lease_s=60)
    assert first.lease_until == T0 + 60
    (second,) = await store.claim_due(T0 + 61, 10, lease_s=60)  # the first lease has passed
    assert second.lease_until == T0 + 121

    assert await store.record_retry(attempt(dlv), T0 + 200, lease=first.lease_until) is False
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.lease_until) == ("pending", 0, T0 + 121)  # the second's

    ok = attempt(dlv, T0 + 62, code=200, error=None)
    assert await store.record_delivered(ok, lease=second.lease_until) is True
    assert await store.record_dead(attempt(dlv), dlv, "late", lease=first.lease_until) is False
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.lease_until, d.last_error) == ("delivered", 1, None, None)
    history = [(a.number, a.outcome) for a in await store.list_attempts(dlv)]
    assert history == [(1, "failed"), (2, "delivered"), (3, "dead")]


async def test_release_and_defer_under_a_passed_lease_leave_the_new_claim_alone(store):
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


async def test_one_bad_result_in_a_batch_fails_alone(store):
    """A result for a delivery that does not exist fails for its caller only; the results
    committed with it are recorded."""
    good = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    results = await asyncio.gather(
        store.record_delivered(attempt(good, code=200, error=None)),
        store.record_delivered(attempt("dlv_gone", code=200, error=None)),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], StoreError)
    assert not isinstance(results[1], StoreUnavailableError)
    assert "record delivered for delivery dlv_gone: no such delivery" in str(results[1])
    (d,) = await store.list_deliveries()
    assert (d.id, d.status) == (good, "delivered")
    assert await store.list_attempts("dlv_gone") == []


async def test_two_results_for_one_delivery_in_a_batch_apply_in_turn(store, monkeypatch):
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
    assert moved == [True, True]
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.last_error) == ("dead", 2, "400 bad request")
    numbers = [(a.number, a.outcome) for a in await store.list_attempts(dlv)]
    assert numbers == [(1, "failed"), (2, "dead")]


@postgres_only
async def test_postgres_a_result_the_database_refuses_fails_alone(store):
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
    assert (results[0], results[2]) == (True, True)
    assert isinstance(results[1], StoreError)
    assert f"record failed for delivery {ids[1]}: " in str(results[1])
    by_id = {d.id: d for d in await store.list_deliveries()}
    assert [by_id[i].status for i in ids] == ["delivered", "pending", "failed"]
    assert [len(await store.list_attempts(i)) for i in ids] == [1, 0, 1]


async def test_a_result_batch_that_cannot_commit_fails_each_caller_by_name(tmp_path):
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


async def test_close_records_results_still_waiting(make_store):
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
    assert all(t.result() is True for t in waiting)
    reopened = make_store()
    await reopened.open()
    try:
        assert {d.status for d in await reopened.list_deliveries()} == {"delivered"}
    finally:
        await reopened.close()


async def test_sqlite_version_1_database_upgrades_to_3(tmp_path):
    """A database of schema version 1 is refused until upgraded; the upgrade adds the claim
    index that claim_due then uses (no sort of the whole backlog)."""
    from relay.store.migrations import SQLITE_STEPS

    raw = sqlite3.connect(tmp_path / "relay.db")
    for statement in SQLITE_STEPS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="version 1, relay needs 3: run `relay db upgrade`"):
        await SQLiteStore(tmp_path / "relay.db").open()
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (1, 3)
    raw = sqlite3.connect(tmp_path / "relay.db")
    plan = raw.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM deliveries d WHERE d.status IN ('pending', 'failed')"
        " AND d.next_attempt_at <= 1 AND (d.lease_until IS NULL OR d.lease_until <= 1)"
        " AND d.sink IN ('x') ORDER BY d.next_attempt_at, d.id LIMIT 10"
    ).fetchall()
    raw.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "deliveries_claimable" in details
    assert "TEMP B-TREE" not in details


async def assert_upgraded_rows_found(store: Store) -> None:
    """The rows written at version 2 (event evt_1 / msg_1, dead delivery dlv_1 to slack) are
    found at version 3 by sender message id and by status and sink."""
    await store.open()
    try:
        found = await store.get_event("msg_1")
        assert found is not None
        assert found.id == "evt_1"
        assert [d.id for d in await store.list_deliveries(status="dead", sink="slack")] == ["dlv_1"]
    finally:
        await store.close()


async def test_sqlite_version_2_database_upgrades_to_3_keeping_its_data(tmp_path):
    """Version 3 drops the indexes ingest no longer writes and adds the dead-delivery index;
    the rows stay, and lookups by message id, sink and status still answer from indexes."""
    import relay.store.sqlite as sqlite_module
    from relay.store.migrations import SQLITE_STEPS

    raw = sqlite3.connect(tmp_path / "relay.db")
    for step in SQLITE_STEPS[:2]:
        for statement in step:
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.commit()
    raw.close()
    v2 = SQLiteStore(tmp_path / "relay.db")
    with pytest.raises(StoreError, match="version 2, relay needs 3"):
        await v2.open()
    raw = sqlite3.connect(tmp_path / "relay.db")
    raw.execute(
        "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1.0, X'7B7D')"
    )
    raw.execute(
        "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
        " next_attempt_at, created_at, updated_at) VALUES"
        " ('dlv_1', 'evt_1', 'r', 0, 'slack', 'k1', 'dead', 1.0, 1.0, 1.0)"
    )
    raw.commit()
    raw.close()
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (2, 3)
    raw = sqlite3.connect(tmp_path / "relay.db")
    indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not indexes & {
        "deliveries_due",
        "deliveries_sink",
        "deliveries_rule",
        "deliveries_created",
        "events_message_id",
    }
    assert {"deliveries_dead", "deliveries_claimable", "deliveries_newest"} <= indexes

    def plan(query: str) -> str:
        return " ".join(str(row[-1]) for row in raw.execute(f"EXPLAIN QUERY PLAN {query}"))

    listing = "SELECT id FROM deliveries WHERE {} ORDER BY created_at DESC, id LIMIT 5"
    assert plan(listing.format("status = 'dead'")) == "SCAN deliveries USING INDEX deliveries_dead"
    for where in ("sink = 'slack'", "rule = 'r' AND sink = 'slack'", "1"):  # no sort: a walk
        assert "TEMP B-TREE" not in plan(listing.format(where))
    by_message = plan(sqlite_module._GET_EVENT.replace("?", "'msg_1'"))
    assert "SCAN events" not in by_message
    assert "sqlite_autoindex_events_2" in by_message
    raw.close()
    await assert_upgraded_rows_found(SQLiteStore(tmp_path / "relay.db"))


async def test_sqlite_newer_schema_is_refused(tmp_path):
    """A file written by a newer relay (user_version > 3) is refused rather than misread."""
    raw = sqlite3.connect(tmp_path / "relay.db")
    raw.execute("PRAGMA user_version = 4")
    raw.close()
    with pytest.raises(StoreError, match="schema version 4 is newer than 3"):
        await SQLiteStore(tmp_path / "relay.db").open()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relay.db", Path("relay.db")),
        ("sqlite:///data/relay.db", Path("data/relay.db")),
        ("sqlite:////var/lib/relay/relay.db", Path("/var/lib/relay/relay.db")),
        ("/var/lib/relay/relay.db", Path("/var/lib/relay/relay.db")),
        ("relay.db", Path("relay.db")),
    ],
)
def test_open_store_parses_sqlite_urls_and_paths(url, path):
    """open_store maps sqlite:/// URLs (relative) and sqlite://// (absolute) and bare paths."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://relay:hunter2@db/relay", "unsupported store URL scheme 'mysql'"),
        ("sqlite://host/relay.db", "a sqlite URL has no host"),
        ("sqlite:///", "needs a file path"),
        ("", "needs a file path"),
        (":memory:", "needs a file path"),
    ],
)
def test_open_store_rejects_other_urls(url, message):
    """Unknown schemes and unusable URLs are a ValueError that never echoes the URL itself."""
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://relay:hunter2@db:5432/relay", "postgresql://relay:***@db:5432/relay"),
        ("postgres://relay:p%40ss/w@db/relay", "postgres://relay:***@db/relay"),
        (
            "postgresql://relay@db/relay?password=hunter2",
            "postgresql://relay@db/relay?password=***",
        ),
        ("postgresql://db/relay?sslmode=require", "postgresql://db/relay?sslmode=require"),
        ("sqlite:///relay.db", "sqlite:///relay.db"),
        ("relay.db", "relay.db"),
    ],
)
def test_redact_url_hides_passwords(url, shown):
    """redact_url shows a password in the user part or a password= parameter as ***."""
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["postgresql://relay:hunter2@db/relay", "postgres://db/relay"])
def test_open_store_maps_postgres_urls(url):
    """postgresql:// and postgres:// URLs name a PostgresStore, which never shows the password."""
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "hunter2" not in repr(store)
    assert "hunter2" not in store.url


def test_sqlite_users_do_not_import_psycopg():
    """Opening a SQLite URL does not import psycopg (it is imported for PostgreSQL URLs only)."""
    code = (
        "import sys; from relay.store import open_store; open_store('sqlite:///relay.db');"
        " assert 'psycopg' not in sys.modules, 'psycopg imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# PostgreSQL specifics: several replicas (one pool each) on one database.


async def test_postgres_connections_use_tcp_keepalives_unless_the_url_says(postgres_url):
    """Every pooled connection has TCP keepalives (30 s idle, 3 probes 10 s apart), so one to a
    server that vanished without closing it fails in about a minute; the URL's own values win."""

    async def parameters(url: str) -> dict[str, str]:
        store = PostgresStore(url)
        await store.open()
        try:
            async with store._cursor("look", transaction=False) as cursor:
                return cursor.connection.info.get_parameters()
        finally:
            await store.close()

    default = await parameters(postgres_url)
    assert {k: default.get(k) for k in ("keepalives_idle", "keepalives_count")} == {
        "keepalives_idle": "30",
        "keepalives_count": "3",
    }
    assert default.get("connect_timeout") == "10"
    chosen = await parameters(f"{postgres_url}&keepalives_idle=5&connect_timeout=3")
    assert (chosen.get("keepalives_idle"), chosen.get("connect_timeout")) == ("5", "3")


@postgres_only
async def test_postgres_replicas_claim_each_due_delivery_exactly_once(make_store):
    """Two replicas with four claimers each race over 200 due deliveries: each delivery is
    claimed by exactly one of them, and together they claim all."""
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        for n in range(20):
            e = event(n)
            await replicas[0].ingest(e, [delivery(e.id, i, due=T0 + i) for i in range(10)])

        async def claim_all(store: Store) -> list[str]:
            got = []
            while batch := await store.claim_due(T0 + 100, 7, lease_s=60):
                got += [c.id for c in batch]
            return got

        results = await asyncio.gather(*(claim_all(r) for r in replicas for _ in range(4)))
        claimed = [dlv for result in results for dlv in result]
        assert len(claimed) == len(set(claimed)) == 200
        assert await replicas[1].claim_due(T0 + 100, 1000, 60) == []
        rows = await replicas[1].list_deliveries(limit=1000)
        assert {d.lease_until for d in rows} == {T0 + 160}
    finally:
        for replica in replicas:
            await replica.close()


@postgres_only
async def test_postgres_lease_of_a_dead_replica_expires_and_another_claims(make_store):
    """A replica that dies mid-attempt keeps its lease; another replica starting does not steal
    it (release_all_leases is a no-op), and claims the delivery once the lease expires."""
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        dlv = await ingest_one(a)
        assert [c.id for c in await a.claim_due(T0, 10, lease_s=60)] == [dlv]
        await a.close()  # dies while sending: no attempt recorded, no release
        assert await b.release_all_leases() == 0
        assert await b.claim_due(T0 + 59.9, 10, 60) == []
        (c,) = await b.claim_due(T0 + 60, 10, 60)
        assert (c.id, c.attempts) == (dlv, 0)
        await b.record_delivered(attempt(dlv, T0 + 60, code=200, error=None))
        (d,) = await b.list_deliveries()
        assert (d.status, d.attempts, d.lease_until) == ("delivered", 1, None)
    finally:
        await a.close()
        await b.close()


@postgres_only
async def test_postgres_group_commit_batches_concurrent_ingests(store, monkeypatch):
    """As on SQLite: ingests that arrive together share one statement and one commit, and each
    caller still gets its own outcome."""
    sizes: list[int] = []
    real = store._commit

    async def counting(batch):
        sizes.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(store._ingests, "_commit", counting)
    forbid_fallback(store, monkeypatch)
    again = NewEvent("evt_again_7", "clerk", "msg_7", "user.created", T0, b"{}")
    events = [event(n) for n in range(100)] + [again]  # one duplicate among them
    outcomes = await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in events))
    assert [o.value for o in outcomes].count("duplicate") == 1
    assert sum(sizes) == 101
    assert len(sizes) < 10
    assert len(await store.list_deliveries(limit=1000)) == 100


@postgres_only
async def test_postgres_concurrent_ingest_of_one_message_accepts_once(make_store):
    """Two replicas ingesting the same 50 messages at once: exactly one ACCEPTED per message."""
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        calls = []
        for n in range(50):
            for name, replica in (("a", a), ("b", b)):
                e = NewEvent(f"evt_{name}{n}", "clerk", f"msg_{n}", "user.created", T0, b"{}")
                calls.append(replica.ingest(e, [delivery(e.id)]))
        outcomes = await asyncio.gather(*calls)
        for n in range(50):
            pair = outcomes[2 * n : 2 * n + 2]
            assert sorted(o.value for o in pair) == ["accepted", "duplicate"], f"msg_{n}"
        assert len(await a.list_events(limit=1000)) == 50
        assert len(await b.list_deliveries(limit=1000)) == 50
    finally:
        await a.close()
        await b.close()


async def test_postgres_no_free_connection_is_unavailable(postgres_url):
    """When the commit in progress does not finish within timeout_s (here, stuck on a lock), an
    ingest queued behind it raises StoreUnavailableError (503); the stuck ingest completes once
    the database lets it. An ingest that needs a connection when none frees up within
    timeout_s is unavailable too."""
    store = PostgresStore(postgres_url, max_size=1, timeout_s=0.5)
    await store.open()
    locker = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(store.ingest(event(1), []))
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as watch:
            for _ in range(100):  # until the first ingest waits for the lock
                cursor = await watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if (await cursor.fetchone()) != (0,):
                    break
                await asyncio.sleep(0.02)
        with pytest.raises(
            StoreUnavailableError, match="ingest clerk message msg_2: the store's commit in"
        ):
            await asyncio.wait_for(store.ingest(event(2), []), 10)  # not left waiting
        with pytest.raises(StoreUnavailableError, match="list events: couldn't get a connection"):
            await store.list_events()
        await locker.rollback()
        assert await first is IngestOutcome.ACCEPTED
        assert await store.ingest(event(2), []) is IngestOutcome.ACCEPTED
    finally:
        await locker.close()
        await store.close()


async def test_postgres_newer_schema_is_refused(postgres_url):
    """A database written by a newer relay (relay_schema version 4) is refused, not misread."""
    assert await PostgresStore(postgres_url).upgrade() == (0, 3)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("UPDATE relay_schema SET version = 4")
    with pytest.raises(StoreError, match="schema version 4 is newer than 3"):
        await PostgresStore(postgres_url).open()


async def test_postgres_version_2_database_upgrades_to_3_keeping_its_data(postgres_url):
    """As on SQLite: version 3 swaps the listing indexes, keeps the rows, and the lookups by
    sender message id and by dead status still find them."""
    import relay.store.postgres_sql as postgres_sql
    from relay.store.migrations import POSTGRES_STEPS

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        for step in POSTGRES_STEPS[:2]:
            for statement in step:
                await conn.execute(statement)
        await conn.execute(postgres_sql.VERSION_TABLE)
        await conn.execute(postgres_sql.SET_VERSION, [2])
        await conn.execute(
            "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1, '{}')"
        )
        await conn.execute(
            "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
            " next_attempt_at, created_at, updated_at) VALUES"
            " ('dlv_1', 'evt_1', 'r', 0, 'slack', 'k1', 'dead', 1, 1, 1)"
        )
    with pytest.raises(StoreError, match="version 2, relay needs 3"):
        await PostgresStore(postgres_url).open()
    assert await PostgresStore(postgres_url).upgrade() == (2, 3)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
        indexes = {name for (name,) in await cursor.fetchall()}
    assert not indexes & {"deliveries_sink", "deliveries_rule", "deliveries_created"}
    assert "events_message_id" not in indexes
    assert {"deliveries_dead", "deliveries_newest", "deliveries_claimable"} <= indexes
    await assert_upgraded_rows_found(PostgresStore(postgres_url))


async def test_postgres_schema_lives_in_its_own_tables(postgres_url):
    """The schema is events, deliveries, attempts and relay_schema (one row: the version)."""
    await PostgresStore(postgres_url).upgrade()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema ORDER BY 1"
        )
        assert [r[0] for r in await cursor.fetchall()] == [
            "attempts",
            "deliveries",
            "events",
            "relay_schema",
        ]
        cursor = await conn.execute("SELECT version FROM relay_schema")
        assert await cursor.fetchall() == [(3,)]


async def test_postgres_unreachable_server_is_unavailable_without_password():
    """A server that refuses connections fails open() with StoreUnavailableError; the text
    names the URL with its password as ***."""
    store = PostgresStore("postgresql://relay:hunter2@127.0.0.1:1/relay", timeout_s=1)
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert str(info.value).startswith(
        "open PostgreSQL store postgresql://relay:***@127.0.0.1:1/relay: connection failed"
    )
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


def test_glob_to_regex():
    """SQLite GLOB patterns become anchored PostgreSQL regular expressions."""
    assert glob_to_regex("user.*") == r"^user\..*$"
    assert glob_to_regex("[^a-c]?") == "^[^a-c].$"
    assert glob_to_regex("[]\\]") == "^[\\]\\\\]$"
    assert glob_to_regex("a[b") == "(?!)"
