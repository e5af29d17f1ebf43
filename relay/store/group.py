"""Group commit: the writes that arrive together share one commit.

Every write submitted while a commit is in progress (or in the same turn of the event loop) joins
the next batch: one transaction and one sync for all of them. Each caller is answered only when
the commit holding its write is durable, with its own outcome. The batch size follows the load (a
lone write is not delayed by any timer), and one batch is in flight at a time. Stores use one
``GroupCommit`` per kind of write: ingests (an event with its deliveries) and the results of
delivery attempts.

The store supplies ``commit(batch)``: it writes the batch and returns one outcome per item, in
order: the item's result, or the ``StoreError`` of an item that failed on its own. If ``commit``
raises, nothing in the batch is stored and every caller gets that error, naming its own item
(``item.describe()``, e.g. ``ingest clerk message msg_1``).

``observe(seconds, writes)``, if set, is told how long each commit took (from its start on
the event loop to its outcome, durable) and how many writes it held: the disk's fsync shows here
(``relay_store_commit_seconds`` in /metrics).

With ``busy_s`` set, a commit that has not finished after that long (a database stuck on a lock,
say) fails the writes queued behind it with StoreUnavailableError (503: the sender retries),
rather than letting them wait for it; the callers in the stuck batch wait for its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from relay.errors import StoreError, StoreUnavailableError
from relay.store.base import NewDelivery, NewEvent
from relay.store.steps import Step

log = logging.getLogger("relay.store")
MAX_BATCH = 256  # writes committed together at most


class Write(Protocol):
    """One write waiting for a commit; ``describe()`` names it in errors."""

    def describe(self) -> str: ...


Item = TypeVar("Item", bound=Write)
Outcome = TypeVar("Outcome")


@dataclass(frozen=True, slots=True)
class PendingIngest:
    """One ingest waiting for its commit: the event, the deliveries it starts and its workflow
    steps (``relay.store.steps``)."""

    event: NewEvent
    deliveries: Sequence[NewDelivery]
    steps: Sequence[Step] = ()

    def describe(self) -> str:
        return f"ingest {self.event.source} message {self.event.message_id}"


@dataclass(slots=True)
class _Waiting(Generic[Item, Outcome]):
    item: Item
    future: asyncio.Future[Outcome]


class GroupCommit(Generic[Item, Outcome]):
    def __init__(
        self,
        commit: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome | StoreError]]],
        busy_s: float | None = None,
    ) -> None:
        self._commit = commit
        self._busy_s = busy_s
        self._queue: list[_Waiting[Item, Outcome]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.observe: Callable[[float, int], None] | None = None

    async def submit(self, item: Item) -> Outcome:
        """Queue ``item`` for the next commit; its outcome once that commit is durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.append(_Waiting(item, future))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until every queued write is committed (or failed)."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        """Commit queued writes in batches until the queue is empty."""
        try:
            while self._queue:
                await asyncio.sleep(0)  # let writes of this loop turn join the batch
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                busy = None
                if self._busy_s is not None:
                    busy = asyncio.get_running_loop().call_later(self._busy_s, self._expire)
                started = time.perf_counter()
                try:
                    outcomes = await self._commit([waiting.item for waiting in batch])
                except Exception as exc:  # the commit failed: nothing in the batch is stored
                    for waiting in batch:
                        if not waiting.future.done():
                            what = waiting.item.describe()
                            waiting.future.set_exception(_again(exc, what))
                    continue
                finally:
                    if busy is not None:
                        busy.cancel()
                seconds = time.perf_counter() - started
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    if waiting.future.done():
                        continue
                    if isinstance(outcome, StoreError):
                        waiting.future.set_exception(outcome)
                    else:
                        waiting.future.set_result(outcome)
                self._observed(seconds, len(batch))
        finally:
            self._flushing = None

    def _observed(self, seconds: float, writes: int) -> None:
        if self.observe is None:
            return
        try:
            self.observe(seconds, writes)
        except Exception:  # metrics must never hold up a write
            log.exception("observing a group commit failed")

    def _expire(self) -> None:
        """The commit in progress has taken ``busy_s``: fail everything queued behind it."""
        queued, self._queue = self._queue, []
        for waiting in queued:
            if not waiting.future.done():
                waiting.future.set_exception(
                    StoreUnavailableError(
                        f"{waiting.item.describe()}: the store's commit in progress has not"
                        f" finished after {self._busy_s:g} s"
                    )
                )


def _again(exc: Exception, what: str) -> StoreError:
    """A fresh exception per waiting caller, naming its own write."""
    if isinstance(exc, StoreError):
        return type(exc)(f"{what}: {str(exc).split(': ', 1)[-1]}")
    return StoreUnavailableError(f"{what}: {exc}")
