"""Group commit for a store's ingest: the events that arrive together share one commit.

Every ``ingest`` that arrives while a commit is in progress (or in the same turn of the event
loop) joins the next batch: one transaction and one sync for all of them. Each caller is answered
only when the commit holding its event is durable, with its own outcome. The batch size follows
the load (a lone request is not delayed by any timer), and one batch is in flight at a time.

The store supplies ``commit(batch)``: it writes the batch and returns one outcome per item, in
order, an ``IngestOutcome`` or the ``StoreError`` of an event that failed on its own. If
``commit`` raises, nobody in the batch is stored and every caller gets that error, naming its own
event.

With ``busy_s`` set, a commit that has not finished after that long (a database stuck on a lock,
say) fails the ingests queued behind it with StoreUnavailableError (503: the sender retries),
rather than letting them wait for it; the callers in the stuck batch wait for its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from relay.errors import StoreError, StoreUnavailableError
from relay.store.base import IngestOutcome, NewDelivery, NewEvent

MAX_BATCH = 256  # events committed together at most


@dataclass(slots=True)
class PendingIngest:
    event: NewEvent
    deliveries: Sequence[NewDelivery]
    future: asyncio.Future[IngestOutcome]


Commit = Callable[[Sequence[PendingIngest]], Awaitable[Sequence[IngestOutcome | StoreError]]]


class GroupCommit:
    def __init__(self, commit: Commit, busy_s: float | None = None) -> None:
        self._commit = commit
        self._busy_s = busy_s
        self._queue: list[PendingIngest] = []
        self._flushing: asyncio.Task[None] | None = None

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        loop = asyncio.get_running_loop()
        pending = PendingIngest(event, deliveries, loop.create_future())
        self._queue.append(pending)
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await pending.future

    async def drain(self) -> None:
        """Wait until every queued ingest is committed (or failed)."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        """Commit queued ingests in batches until the queue is empty."""
        try:
            while self._queue:
                await asyncio.sleep(0)  # let requests of this loop turn join the batch
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                busy = None
                if self._busy_s is not None:
                    busy = asyncio.get_running_loop().call_later(self._busy_s, self._expire)
                try:
                    outcomes = await self._commit(batch)
                except Exception as exc:  # the commit failed: nobody in the batch is stored
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(_again(exc, item.event))
                    continue
                finally:
                    if busy is not None:
                        busy.cancel()
                for item, outcome in zip(batch, outcomes, strict=True):
                    if item.future.done():
                        continue
                    if isinstance(outcome, Exception):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(outcome)
        finally:
            self._flushing = None

    def _expire(self) -> None:
        """The commit in progress has taken ``busy_s``: fail everything queued behind it."""
        queued, self._queue = self._queue, []
        for item in queued:
            if not item.future.done():
                item.future.set_exception(
                    StoreUnavailableError(
                        f"ingest {item.event.source} message {item.event.message_id}: the"
                        f" store's commit in progress has not finished after {self._busy_s:g} s"
                    )
                )


def _again(exc: Exception, event: NewEvent) -> StoreError:
    """A fresh exception per waiting caller, naming its own event."""
    what = f"ingest {event.source} message {event.message_id}"
    if isinstance(exc, StoreError):
        return type(exc)(f"{what}: {str(exc).split(': ', 1)[-1]}")
    return StoreUnavailableError(f"{what}: {exc}")
