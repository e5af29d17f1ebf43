"""Retention: finished history (delivered, dead, cancelled, suppressed) older than
``retention.events`` (rules.yaml; 30 days by default) is purged in the background, in small
batches, without stalling ingest.

A pass deletes ``BATCH`` events (with their deliveries and attempts) per store call, each its own
short transaction, and then waits three times as long as that call took (``PAUSE_S`` at least):
the purge holds the store at most a quarter of the time (``DUTY``), and on SQLite (one writer,
one thread) the group commits of ingest and of attempt results run between batches rather than
behind the whole purge. It stops when a batch comes back short.

Passes run ``FIRST_AFTER_S`` after start, then every ``INTERVAL_S``; the retention in force is
read at each pass (a reload changes it). Pending work is never purged (``Store.purge``).
``relay purge --older-than`` runs the same batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from relay.errors import StoreError
from relay.metrics import Metrics
from relay.store.base import DeliveryLog, Purged

__all__ = ["BATCH", "DUTY", "INTERVAL_S", "PAUSE_S", "Purger", "purge"]

BATCH = 200  # events per transaction: ~10-20 ms of SQLite's one writer
PAUSE_S = 0.02  # between batches at least: ingest's and the worker's commits go first
DUTY = 0.25  # the share of the store's time a purge may take
FIRST_AFTER_S = 30.0
INTERVAL_S = 3600.0

log = logging.getLogger("relay.retention")

Sleep = Callable[[float], Awaitable[None]]


async def purge(
    store: DeliveryLog,
    older_than: float,
    *,
    batch: int = BATCH,
    pause_s: float = PAUSE_S,
    sleep: Sleep = asyncio.sleep,
    timer: Callable[[], float] = time.monotonic,
    each: Callable[[Purged], None] = lambda purged: None,
) -> Purged:
    """Purge everything purgeable received before ``older_than``, ``batch`` events at a time,
    sleeping after each batch (``pause_s`` at least) so that batches take at most ``DUTY`` of
    the time; ``each`` sees every batch. Returns the total."""
    total = Purged()
    while True:
        started = timer()
        done = await store.purge(older_than, limit=batch)
        took_s = timer() - started
        total += done
        each(done)
        if done.events < batch:
            return total
        await sleep(max(pause_s, took_s * (1 - DUTY) / DUTY))


class Purger:
    """The background retention task of a relay that runs the worker."""

    def __init__(
        self,
        store: DeliveryLog,
        retention_s: Callable[[], float],
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.timer = timer

    async def run(self) -> None:
        """Pass after pass until cancelled; a store failure is logged and the next pass tries
        again."""
        await self.sleep(FIRST_AFTER_S)
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("retention pass failed", extra={"fields": {"error": str(exc)}})
            await self.sleep(INTERVAL_S)

    async def run_once(self) -> Purged:
        """One pass: everything received more than the retention ago that is purgeable."""
        older_than = self.clock() - self.retention_s()
        total = await purge(
            self.store,
            older_than,
            sleep=self.sleep,
            timer=self.timer,
            each=lambda p: self.metrics.purged(p.events, p.deliveries, p.attempts),
        )
        self.metrics.purge_finished(self.clock())
        if total.events:
            fields = {"events": total.events, "deliveries": total.deliveries,
                      "attempts": total.attempts, "older_than": older_than}  # fmt: skip
            log.info("purged finished history", extra={"fields": fields})
        return total
