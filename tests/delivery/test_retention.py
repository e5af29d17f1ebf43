"""The background retention purge: batches of BATCH with a yield between them, the retention in
force at each pass, metrics of what went, and pending work left alone."""

from __future__ import annotations

import asyncio

import pytest

from relay.delivery import retention
from relay.delivery.retention import BATCH, PAUSE_S, Purger
from relay.errors import StoreError
from relay.metrics import Metrics
from relay.store import Purged, SQLiteStore
from tests.store.helpers import T0, attempt, delivery, event

pytestmark = pytest.mark.anyio
DAY = 86400.0


async def seed(store: SQLiteStore, delivered: int, pending: int, at: float) -> None:
    """``delivered`` events whose one delivery was delivered, and ``pending`` ones still due."""
    for n in range(delivered + pending):
        e = event(n, at=at + n * 0.001)
        await store.ingest(e, [delivery(e.id)])
        if n < delivered:
            await store.record_delivered(attempt(f"dlv_{e.id}_0", code=200, error=None))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_a_pass_purges_in_batches_yielding_between_them(store: SQLiteStore) -> None:
    """BATCH * 2 + 50 old delivered events go in three batches with a pause after each full
    one: three times what the batch took (the purge holds the store a quarter of the time), and
    PAUSE_S at least; 30 old pending deliveries stay; the metrics count every row."""
    await seed(store, delivered=2 * BATCH + 50, pending=30, at=T0)
    pauses: list[float] = []
    took = iter([0.1, 0.001])  # what each full batch takes, by the injected timer
    now = [0.0]

    def timer() -> float:
        return now[0]

    class TimedStore:
        async def purge(self, older_than: float, *, limit: int = 1000) -> Purged:
            done = await store.purge(older_than, limit=limit)
            now[0] += next(took, 0.0)
            return done

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    metrics = Metrics()
    purger = Purger(TimedStore(), lambda: 30 * DAY, metrics, clock=lambda: T0 + 31 * DAY,  # type: ignore[arg-type]
                    sleep=sleep, timer=timer)  # fmt: skip
    n = 2 * BATCH + 50
    assert await purger.run_once() == Purged(n, n, n)
    assert pauses == [pytest.approx(0.3), PAUSE_S]
    left = await store.list_deliveries(limit=1000)
    assert len(left) == 30
    assert {d.status.value for d in left} == {"pending"}
    assert value(metrics, "relay_purged_rows_total", table="events") == n
    assert value(metrics, "relay_purged_rows_total", table="attempts") == n
    assert value(metrics, "relay_retention_last_purge_timestamp_seconds") == T0 + 31 * DAY


async def test_a_pass_keeps_what_is_younger_than_the_retention_in_force(
    store: SQLiteStore,
) -> None:
    """The retention is read at each pass: what is younger stays until a reload shortens it."""
    await seed(store, delivered=3, pending=0, at=T0)
    days = [30.0]
    purger = Purger(store, lambda: days[0] * DAY, Metrics(), clock=lambda: T0 + 10 * DAY)
    assert await purger.run_once() == Purged()
    days[0] = 7
    assert await purger.run_once() == Purged(3, 3, 3)


class FlakyStore:
    """A store whose first purge fails (the database locked), and which then has nothing."""

    def __init__(self) -> None:
        self.calls = 0

    async def purge(self, older_than: float, *, limit: int = 1000) -> Purged:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("purge events: database is locked")
        return Purged()


async def test_the_task_waits_then_passes_every_interval_and_survives_a_store_failure() -> None:
    """run(): the first pass after FIRST_AFTER_S, then one each INTERVAL_S; a pass that fails
    is logged and the next one runs."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:
            raise asyncio.CancelledError

    store = FlakyStore()
    purger = Purger(store, lambda: 30 * DAY, Metrics(), clock=lambda: T0, sleep=sleep)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await purger.run()
    first, interval = retention.FIRST_AFTER_S, retention.INTERVAL_S
    assert waits == [first, interval, interval, interval]
    assert store.calls == 3
