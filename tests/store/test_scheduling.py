"""Scheduled deliveries in the store, on every backend: due later, outside the claims until
promoted, never counted as waiting work before they are due; moved back by a send window;
the held-back states replayed only when asked; what purge keeps."""

from __future__ import annotations

import pytest
from psycopg import sql

from relay.store import DeliveryStatus, Recorded, SQLiteStore, Store
from relay.store.postgres import PostgresStore
from relay.store.steps import Cancel
from tests.store.helpers import T0, attempt, event, ingest_one, stored
from tests.store.steps_helpers import DAY, cancel, created, digest, limit

pytestmark = pytest.mark.anyio


async def test_a_scheduled_delivery_is_claimed_only_once_due_and_promoted(store: Store) -> None:
    """A delivery due in 3 days is stored scheduled; no claim takes it before then, and
    promote_due makes it pending (claimable) only once its time has come."""
    dlv = await created(store, 1, T0 + 3 * DAY, "user_1")
    (d,) = await store.list_deliveries()
    assert (d.status, d.next_attempt_at) == ("scheduled", T0 + 3 * DAY)
    assert await store.claim_due(T0 + 4 * DAY, 10, 60) == []  # never claimed while scheduled
    assert await store.promote_due(T0 + 3 * DAY - 1) == 0
    assert (await stored(store, dlv)).status == "scheduled"
    assert await store.promote_due(T0 + 3 * DAY) == 1
    assert (await stored(store, dlv)).status == "pending"
    (claimed,) = await store.claim_due(T0 + 3 * DAY, 10, 60)
    assert claimed.id == dlv
    assert await store.promote_due(T0 + 5 * DAY) == 0


async def test_promote_due_takes_the_earliest_due_up_to_its_limit(store: Store) -> None:
    """promote_due moves the due ones earliest first, at most ``limit`` a call, and none due
    later."""
    for n, due in enumerate([T0 + 30, T0 + 10, T0 + 20, T0 + 50, T0 + 40], start=1):
        await created(store, n, due, f"user_{n}")
    assert await store.promote_due(T0 + 45, limit=2) == 2
    pending = sorted(d.next_attempt_at for d in await store.list_deliveries(status="pending"))
    assert pending == [T0 + 10, T0 + 20]
    assert await store.promote_due(T0 + 45) == 2
    (left,) = await store.list_deliveries(status="scheduled")
    assert left.next_attempt_at == T0 + 50


async def test_queue_stats_leave_out_deliveries_not_yet_due(store: Store) -> None:
    """Scheduled deliveries are not waiting work until they are due: the queue statistics (and
    so /metrics and /readyz) count only the pending and failed ones."""
    await ingest_one(store, 1)
    for n in range(2, 12):
        await created(store, n, T0 + n * DAY, f"user_{n}")
    stats = await store.queue_stats(T0)
    assert (stats.due, stats.pending_total) == (1, 1)
    await store.promote_due(T0 + 2 * DAY)
    stats = await store.queue_stats(T0 + 2 * DAY)
    assert (stats.due, stats.pending_total) == (2, 2)


async def test_defer_as_scheduled_moves_a_claimed_delivery_to_its_window(store: Store) -> None:
    """A delivery that came due outside its send window is deferred as scheduled: due at the
    opening, no attempt counted, out of the claims until promoted; a cancelled one stays
    cancelled."""
    dlv = await ingest_one(store)
    (claimed,) = await store.claim_due(T0, 10, 60)
    await store.defer(dlv, T0 + 3600, lease=claimed.lease_until, scheduled=True)
    d = await stored(store, dlv)
    assert (d.status, d.next_attempt_at, d.attempts, d.lease_until) == (
        "scheduled", T0 + 3600, 0, None,
    )  # fmt: skip
    assert await store.claim_due(T0 + 3600, 10, 60) == []
    await created(store, 2, T0, "user_2")
    await cancel(store, 3, "user_2")
    gone = f"dlv_{event(2).id}_0"
    await store.defer(gone, T0 + 7200, scheduled=True)
    assert (await stored(store, gone)).status == "cancelled"


async def test_replay_sends_cancelled_and_suppressed_ones_only_when_asked(store: Store) -> None:
    """Held back on purpose: replay leaves cancelled and suppressed deliveries alone unless
    ``also`` names their status; it refuses to be asked for anything else."""
    kept = await created(store, 1, T0 + DAY, "user_1")
    await cancel(store, 2, "user_1")
    await limit(store, 3, "ada@example.com", T0)
    await limit(store, 4, "ada@example.com", T0)  # suppressed
    held = f"dlv_{event(4).id}"
    assert (await stored(store, held)).status == "suppressed"
    assert await store.replay([kept, held], T0 + 10) == 0
    assert await store.replay([kept], T0 + 10, also=[DeliveryStatus.CANCELLED]) == 1
    assert await store.replay([held], T0 + 10, also=[DeliveryStatus.SUPPRESSED]) == 1
    assert {(await stored(store, i)).status for i in (kept, held)} == {"pending"}
    with pytest.raises(ValueError, match="cannot replay scheduled deliveries"):
        await store.replay([kept], T0, also=[DeliveryStatus.SCHEDULED])


async def test_record_suppressed_holds_a_claimed_delivery_back_without_an_attempt(
    store: Store,
) -> None:
    """A claimed delivery can be suppressed with a reason (a suppressed recipient): final, no
    attempt recorded, not claimed again."""
    dlv = await ingest_one(store)
    (claimed,) = await store.claim_due(T0, 10, 60)
    reason = "recipient ada@example.com is suppressed (bounced)"
    recorded = await store.record_suppressed(dlv, reason, lease=claimed.lease_until)
    assert recorded is Recorded.MOVED
    d = await stored(store, dlv)
    assert (d.status, d.last_error, d.lease_until, d.attempts) == ("suppressed", reason, None, 0)
    assert await store.list_attempts(dlv) == []
    assert await store.claim_due(T0 + DAY, 10, 60) == []


async def test_purge_keeps_what_is_unsent_and_the_events_an_unsent_digest_holds(
    store: Store,
) -> None:
    """Purge removes events whose deliveries are all final (delivered, dead, cancelled,
    suppressed); never one with a scheduled delivery, nor one batched in a digest that has not
    gone out; once the digest is final, its events go too, and then its empty batch."""
    await created(store, 1, T0 + 30 * DAY, "user_1")  # scheduled
    await created(store, 2, T0 + DAY, "user_2")
    await cancel(store, 3, "user_2")  # 2 cancelled; 3 has no deliveries
    for n in (4, 5):
        await digest(store, n, T0 + n)
    assert (await store.purge(T0 + DAY)).events == 2  # events 2 and 3
    assert await store.get_event(event(1).id) is not None
    assert {e.id for e in await store.list_events()} == {event(n).id for n in (1, 4, 5)}

    (digest_row,) = [d for d in await store.list_deliveries() if d.id.endswith("_d0")]
    await store.promote_due(T0 + 605)
    (claimed,) = await store.claim_due(T0 + 605, 10, 60)
    assert claimed.id == digest_row.id
    await store.record_delivered(attempt(claimed.id, T0 + 605, code=200, error=None))
    assert await batches(store) == 1
    assert (await store.purge(T0 + DAY)).events == 2  # events 4 and 5, with their batch
    assert {e.id for e in await store.list_events()} == {event(1).id}
    assert await store.list_deliveries(batch_id=claimed.batch_id) == []
    assert await batches(store) == 0


async def batches(store: Store) -> int:
    """How many digest batches the store holds (no API reads them: the table, directly)."""
    count = "SELECT COUNT(*) FROM batches"
    if isinstance(store, SQLiteStore):
        ((n,),) = await store._fetch("count batches", count, ())
    else:
        assert isinstance(store, PostgresStore)
        ((n,),) = await store._fetch("count batches", sql.SQL(count), ())
    return int(n)


async def test_cancel_step_and_plain_deliveries_commit_together(store: Store) -> None:
    """An ingest's steps are in the commit that stores its event: a duplicate of the cancelling
    event cancels nothing more and stores nothing."""
    await created(store, 1, T0 + DAY, "user_1")
    e = event(2, type="user.deleted")
    first = await store.admit(e, [], [Cancel("onboarding", "user_1", "by 2")])
    assert first.outcome.value == "accepted"
    assert [s.cancelled for s in first.steps] == [((f"dlv_{event(1).id}_0", "email"),)]
    await created(store, 3, T0 + DAY, "user_1")
    again = await store.admit(e, [], [Cancel("onboarding", "user_1", "by 2 again")])
    assert (again.outcome.value, again.steps) == ("duplicate", ())
    assert (await stored(store, f"dlv_{event(3).id}_0")).status == "scheduled"
