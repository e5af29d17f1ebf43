"""The ops endpoints: ``/healthz``, ``/readyz`` and ``/metrics``, cheap whoever asks and how often.

What they read of the store (the queue's figures, and the store's probe when ingest's last commit
failed) is read by one request at a time and kept for a few seconds (``Cached``): however many
clients ask, the store does that work at most once per ``STATS_MAX_AGE_S`` / ``PROBE_MAX_AGE_S``,
on SQLite on a read-only connection of its own that never queues behind ingest's commits. The
``/metrics`` text (a few ms of CPU to render) is made at most every ``RENDER_EVERY_S``, once for
all the requests waiting then (``Paced``): a client that asks in a loop gets an answer at that
pace, and costs the event loop next to nothing while it waits.

``/readyz`` tells the truth (``relay.health``): 200 only when the relay has started, the store can
commit (ingest's latest commit succeeded, or it failed for a reason that may pass and the probe
now passes) and the worker can claim (its latest claim succeeded); otherwise 503 with what is
failing, since when.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.health import STORE
from relay.server.lifespan import RelayState
from relay.store.base import QueueStats

T = TypeVar("T")
STATS_MAX_AGE_S = 2.0
PROBE_MAX_AGE_S = 1.0
RENDER_EVERY_S = 0.5  # /metrics is rendered at most this often, for every request waiting
WAIT_S = 2.0  # how long a request waits for a read in progress


class Cached(Generic[T]):
    """The latest value of ``read()``, read again once it is ``max_age_s`` old, by one read at a
    time: callers that find it too old wait for that one read (all of them for the same one),
    up to ``WAIT_S``; past that (a store that hangs) they get the value in hand, however old.
    ``error`` is what the latest read raised, if it failed (the value stays the last good one).
    """

    def __init__(self, read: Callable[[], Awaitable[T]], max_age_s: float) -> None:
        self._read = read
        self.max_age_s = max_age_s
        self.value: T | None = None
        self.error: BaseException | None = None
        self.read_at = float("-inf")  # when the latest read started (monotonic)
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> T | None:
        if self._task is None and time.monotonic() - self.read_at >= self.max_age_s:
            self.read_at = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), WAIT_S)
        return self.value

    async def _refresh(self) -> None:
        try:
            self.value, self.error = await self._read(), None
        except Exception as exc:
            self.error = exc
        finally:
            self._task = None


class Paced(Generic[T]):
    """``make()`` for whoever asks, made at most once per ``interval_s``: a caller waits for the
    next making that starts after it asked (at once when the last one is ``interval_s`` old),
    and every caller waiting then shares it. However many ask, it is made at most
    1 / ``interval_s`` times a second, and no caller gets what was made before it asked."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]], interval_s: float) -> None:
        self._make = make
        self.interval_s = interval_s
        self.made = 0  # times made, ever
        self._next: asyncio.Future[T] | None = None  # the making callers wait for, not started
        self._last = float("-inf")  # when the latest making started (monotonic)

    async def get(self) -> T:
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            delay = max(0.0, self._last + self.interval_s - time.monotonic())
            loop.call_later(delay, self._start)
        return await asyncio.shield(self._next)

    def _start(self) -> None:
        future, self._next = self._next, None
        self._last = time.monotonic()
        assert future is not None
        task = asyncio.get_running_loop().create_task(self._make())
        task.add_done_callback(lambda done: _settle(future, done))
        self.made += 1


def _settle(future: asyncio.Future[T], done: asyncio.Task[T]) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif (error := done.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(done.result())


class Ops:
    """The three endpoints over one running relay's state."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        store, clock = state.store, state.clock
        self.stats: Cached[QueueStats] = Cached(lambda: store.queue_stats(clock()), STATS_MAX_AGE_S)
        self.probe: Cached[bool] = Cached(self._probe, PROBE_MAX_AGE_S)
        self.rendered: Paced[bytes] = Paced(self._render, RENDER_EVERY_S)

    async def _probe(self) -> bool:
        await self.state.store.probe()
        return True

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        state = self.state
        if not state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        failing = await self.failing()
        content: dict[str, object] = {
            "status": "not_ready" if failing else "ready",
            "rules": len(state.config.rules),
        }
        if failing:
            content["failing"] = failing
            return JSONResponse(content, status_code=503)
        return JSONResponse(content)

    async def failing(self) -> dict[str, dict[str, object]]:
        """What keeps the relay from being ready: each failing check, its error, since when."""
        now = self.state.clock()
        found: dict[str, dict[str, object]] = {}
        for check, failure in self.state.health.failing().items():
            if check == STORE and failure.transient and await self._probe_passes():
                continue  # nothing committed since; the store says it could now
            found[check] = {"error": failure.error, "for_s": round(max(0.0, now - failure.since))}
        return found

    async def _probe_passes(self) -> bool:
        passed = await self.probe.get()
        return passed is True and self.probe.error is None

    async def _render(self) -> bytes:
        stats = await self.stats.get()
        if stats is not None:
            self.state.metrics.queue(stats.due, stats.pending_total, stats.oldest_due_age_s)
        return self.state.metrics.render()

    async def metrics(self, request: Request) -> Response:
        return Response(
            await self.rendered.get(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )
