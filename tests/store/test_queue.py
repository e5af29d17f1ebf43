"""The queue that ingest and the worker use: ingest, claim, defer, leases, results, release,
replay, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from relay.errors import StoreError
from relay.store import DeliveryStatus, IngestOutcome, NewEvent, QueueStats, Store
from tests.store.helpers import T0, attempt, delivery, event, ingest_one, sqlite_only

pytestmark = pytest.mark.anyio


async def test_ingest_commits_event_and_deliveries_together(
    store: Store, make_store: Callable[[], Store]
) -> None:
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


async def test_ingest_is_all_or_nothing(store: Store) -> None:
    """When one delivery cannot be inserted, neither the event nor any delivery is stored."""
    e = event()
    d = delivery(e.id)
    with pytest.raises(StoreError, match="ingest clerk message msg_1"):
        await store.ingest(e, [d, d])  # the same delivery id twice
    assert await store.get_event(e.id) is None
    assert await store.list_deliveries() == []
    assert await store.ingest(e, [d]) is IngestOutcome.ACCEPTED


async def test_duplicate_message_is_reported_and_adds_nothing(store: Store) -> None:
    """A second event with the same (source, message_id) is DUPLICATE and stores nothing."""
    first = event()
    await store.ingest(first, [delivery(first.id)])
    again = NewEvent("evt_other", "clerk", first.message_id, first.type, T0 + 60, first.body)
    assert await store.ingest(again, [delivery(again.id)]) is IngestOutcome.DUPLICATE
    assert await store.get_event("evt_other") is None
    assert [d.event_id for d in await store.list_deliveries()] == [first.id]


async def test_same_message_id_from_another_source_is_new(store: Store) -> None:
    """Deduplication is per source: the same message id from another source is accepted."""
    a, b = event(source="clerk"), event(source="billing")
    assert await store.ingest(a, [delivery(a.id)]) is IngestOutcome.ACCEPTED
    assert await store.ingest(b, [delivery(b.id)]) is IngestOutcome.ACCEPTED


async def test_claim_due_returns_due_rows_oldest_first_up_to_limit(store: Store) -> None:
    """Only rows due by now are claimed, ordered by next_attempt_at, at most ``limit``."""
    e = event()
    dues = [T0 + 30, T0 + 10, T0 + 20, T0 + 500]
    await store.ingest(e, [delivery(e.id, i, due=due) for i, due in enumerate(dues)])
    claimed = await store.claim_due(T0 + 100, limit=2, lease_s=60)
    assert [c.id for c in claimed] == [f"dlv_{e.id}_1", f"dlv_{e.id}_2"]
    assert [c.id for c in await store.claim_due(T0 + 100, 10, 60)] == [f"dlv_{e.id}_0"]
    assert await store.claim_due(T0 + 100, 10, 60) == []


async def test_claimed_delivery_carries_the_event(store: Store) -> None:
    """A claim joins the delivery with what rendering needs: the event's source, type and body."""
    e = event()
    d = delivery(e.id, rule="welcome", sink="email")
    await store.ingest(e, [d])
    (c,) = await store.claim_due(T0, 10, 60)
    assert (c.event_id, c.source, c.message_id, c.event_type) == (e.id, "clerk", "msg_1", e.type)
    assert (c.received_at, c.body, c.rule, c.send_index) == (T0, e.body, "welcome", 0)
    assert (c.sink, c.idempotency_key, c.attempts) == ("email", d.idempotency_key, 0)


async def test_claim_due_filters_by_sink(store: Store) -> None:
    """With ``sink``, only deliveries to that sink are claimed."""
    e = event()
    sinks = ["slack", "email", "http"]
    await store.ingest(e, [delivery(e.id, i, sink=s) for i, s in enumerate(sinks)])
    assert await store.claim_due(T0, 10, 60, sink="other") == []
    (claimed,) = await store.claim_due(T0, 10, 60, sink="email")
    assert claimed.sink == "email"
    assert sorted(c.sink for c in await store.claim_due(T0, 10, 60)) == ["http", "slack"]


async def test_claim_due_filters_by_rule_and_orphans_are_the_rest(store: Store) -> None:
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


async def test_defer_makes_a_delivery_due_later_without_an_attempt(store: Store) -> None:
    """defer() drops the lease and moves the due time; no attempt is counted or recorded."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, 60)
    await store.defer(dlv, T0 + 30)
    assert await store.claim_due(T0 + 29, 10, 60) == []
    (c,) = await store.claim_due(T0 + 30, 10, 60)
    assert (c.id, c.attempts) == (dlv, 0)
    assert await store.list_attempts(dlv) == []


async def test_lease_hides_a_claimed_row_until_it_expires(store: Store) -> None:
    """A leased row is not claimed again before now + lease_s, and is claimable after."""
    dlv = await ingest_one(store)
    assert [c.id for c in await store.claim_due(T0, 10, lease_s=60)] == [dlv]
    assert await store.claim_due(T0 + 59.9, 10, 60) == []
    assert [c.id for c in await store.claim_due(T0 + 60, 10, 60)] == [dlv]


async def test_retry_then_delivered_records_numbered_attempts(store: Store) -> None:
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


async def test_retry_is_due_at_next_attempt_at_and_not_before(store: Store) -> None:
    """A failed delivery is claimable from next_attempt_at on, and not a moment earlier."""
    dlv = await ingest_one(store)
    await store.claim_due(T0, 10, lease_s=3600)
    await store.record_retry(attempt(dlv), T0 + 120)
    (d,) = await store.list_deliveries(status="failed")
    assert (d.next_attempt_at, d.lease_until, d.last_error) == (T0 + 120, None, "x")
    assert await store.claim_due(T0 + 119.99, 10, 60) == []
    assert [c.id for c in await store.claim_due(T0 + 120, 10, 60)] == [dlv]


async def test_record_dead_with_attempt(store: Store) -> None:
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


async def test_record_dead_without_attempt(store: Store) -> None:
    """Dead-lettering without an attempt (e.g. its sink was removed) records no attempt."""
    dlv = await ingest_one(store)
    await store.record_dead(None, dlv, "sink 'slack' no longer exists")
    (d,) = await store.list_deliveries()
    assert (d.status, d.attempts, d.last_error) == ("dead", 0, "sink 'slack' no longer exists")
    assert await store.list_attempts(dlv) == []


async def test_recording_an_unknown_delivery_is_a_store_error(store: Store) -> None:
    """Recording an attempt of a delivery that does not exist raises StoreError."""
    with pytest.raises(StoreError, match="record delivered for delivery dlv_nope: no such"):
        await store.record_delivered(attempt("dlv_nope"))
    assert await store.list_attempts("dlv_nope") == []


async def test_release_makes_leased_rows_due_at_once(store: Store) -> None:
    """release() drops the given leases only, without recording an attempt."""
    e = event()
    await store.ingest(e, [delivery(e.id, 0), delivery(e.id, 1)])
    first, _ = await store.claim_due(T0, 10, 60)
    await store.release([first.id])
    assert [c.id for c in await store.claim_due(T0 + 1, 10, 60)] == [first.id]
    assert [d.attempts for d in await store.list_deliveries()] == [0, 0]
    assert await store.list_attempts(first.id) == []


@sqlite_only
async def test_release_all_leases_counts_what_it_dropped(store: Store) -> None:
    """release_all_leases() frees every leased row and returns how many it freed."""
    e = event()
    await store.ingest(e, [delivery(e.id, i) for i in range(3)])
    await store.claim_due(T0, 2, 60)
    assert await store.release_all_leases() == 2
    assert len(await store.claim_due(T0, 10, 60)) == 3
    assert await store.release_all_leases() == 3
    assert await store.release_all_leases() == 0


async def test_replay_keeps_idempotency_key_and_history(store: Store) -> None:
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


async def test_replay_skips_pending_and_in_flight_deliveries(store: Store) -> None:
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


async def test_queue_stats(store: Store) -> None:
    """due counts claimable rows, pending_total every non-final row, age the oldest due one."""
    e = event()
    dues = [T0 + 10, T0 + 20, T0 + 1000, T0 + 5, T0 + 0]
    await store.ingest(e, [delivery(e.id, i, due=due) for i, due in enumerate(dues)])
    assert await store.queue_stats(T0 - 1) == QueueStats(0, 5, None)
    done, _ = await store.claim_due(T0 + 5, 2, 60)  # due T0 + 0 and T0 + 5, leased to T0 + 65
    await store.record_delivered(attempt(done.id, code=200, error=None))
    assert await store.queue_stats(T0 + 50) == QueueStats(2, 4, 40.0)
    assert await store.queue_stats(T0 + 5 + 60) == QueueStats(3, 4, 60.0)


async def test_data_survives_close_and_reopen(
    store: Store, make_store: Callable[[], Store]
) -> None:
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


async def test_concurrent_ingests_commit_and_dedupe_exactly_once(store: Store) -> None:
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


async def test_a_closed_store_refuses_work(store: Store) -> None:
    """Calls after close() raise StoreError instead of touching a closed connection."""
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])
