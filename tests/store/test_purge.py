"""Retention's purge on every backend: only old history whose deliveries are all final goes, in
batches, with its deliveries and attempts counted; pending work never does."""

from __future__ import annotations

import pytest

from relay.store import IngestOutcome, Purged, Store
from tests.store.helpers import T0, attempt, delivery, event

pytestmark = pytest.mark.anyio


async def test_purge_removes_only_old_finished_events(store: Store) -> None:
    """purge deletes old events whose deliveries are all final, with their deliveries and
    attempts (counted); the message id is then new."""
    done, busy, young = event(1, at=T0), event(2, at=T0), event(3, at=T0 + 100)
    for e in (done, busy, young):
        await store.ingest(e, [delivery(e.id)])
    await store.record_retry(attempt(f"dlv_{done.id}_0"), T0 + 5)
    await store.record_delivered(attempt(f"dlv_{done.id}_0", code=200, error=None))
    await store.record_dead(None, f"dlv_{young.id}_0", "no")
    assert await store.purge(older_than=T0 + 50) == Purged(events=1, deliveries=1, attempts=2)
    assert await store.get_event(done.id) is None
    assert await store.list_attempts(f"dlv_{done.id}_0") == []
    assert {d.event_id for d in await store.list_deliveries()} == {busy.id, young.id}
    assert await store.ingest(done, []) is IngestOutcome.ACCEPTED


async def test_purge_never_touches_pending_work(store: Store) -> None:
    """An old event with one delivery that is not final (pending, failed, or pending again after
    a replay) stays, all its deliveries and attempts with it; events without deliveries go."""
    pending, failed, replayed, mixed, bare = (event(n, at=T0) for n in range(1, 6))
    for e in (pending, failed, replayed):
        await store.ingest(e, [delivery(e.id)])
    await store.ingest(mixed, [delivery(mixed.id, 0), delivery(mixed.id, 1)])
    await store.ingest(bare, [])
    await store.record_retry(attempt(f"dlv_{failed.id}_0"), T0 + 5)
    await store.record_delivered(attempt(f"dlv_{replayed.id}_0", code=200, error=None))
    assert await store.replay([f"dlv_{replayed.id}_0"], T0 + 10) == 1
    await store.record_delivered(attempt(f"dlv_{mixed.id}_0", code=200, error=None))
    assert await store.purge(older_than=T0 + 3600) == Purged(events=1)
    kept = await store.list_deliveries()
    assert sorted(d.id for d in kept) == sorted(
        [f"dlv_{e.id}_0" for e in (pending, failed, replayed, mixed)] + [f"dlv_{mixed.id}_1"]
    )
    assert len(await store.list_attempts(f"dlv_{failed.id}_0")) == 1
    assert await store.get_event(bare.id) is None


async def test_purge_goes_oldest_first_in_batches_of_limit(store: Store) -> None:
    """Each call deletes at most `limit` events, the oldest first; a short batch means done."""
    events = [event(n, at=T0 + n) for n in range(7)]
    for e in events:
        await store.ingest(e, [delivery(e.id)])
        await store.record_delivered(attempt(f"dlv_{e.id}_0", code=200, error=None))
    batches = [await store.purge(older_than=T0 + 100, limit=3) for _ in range(4)]
    assert [b.events for b in batches] == [3, 3, 1, 0]
    assert sum((b for b in batches), Purged()) == Purged(events=7, deliveries=7, attempts=7)
    assert await store.list_events() == []


async def test_purge_of_nothing_is_zero(store: Store) -> None:
    """Nothing old enough: nothing goes, and the answer says so."""
    e = event(1, at=T0)
    await store.ingest(e, [delivery(e.id)])
    await store.record_dead(None, f"dlv_{e.id}_0", "no")
    assert await store.purge(older_than=T0) == Purged()
    assert await store.get_event(e.id) is not None
