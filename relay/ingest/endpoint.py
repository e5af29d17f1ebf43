"""The ingest endpoint: raw body → the source verifies and splits it → store each event → 2xx.

Ingest never waits on a sink. A 2xx means every event of the request and its deliveries are
durably committed (the store commits concurrent requests together, see ``SQLiteStore.ingest``; a
request that carries several events is answered only after the last one). Anything the sender
should not retry gets a 4xx; a store that cannot commit gets a 503 so the sender retries later.
Events of a batch stored before the failure are harmless then: the retry finds them as
duplicates. A body too large (413), too slow to arrive (408, ``BodyDeadlines``) or that does not
fit the bodies held in memory now (503 ``busy``, ``relay.ingest.budget``) is refused before it is
read whole, and the connection is closed after the answer (``relay.server.connections`` drains
the rest first, so the client reads it). Each commit's outcome goes to ``relay.health`` for /readyz.

The endpoint is a plain ASGI app: the hot path builds no Starlette request or response objects
(see bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers

from relay import logs
from relay.config import Config, SourceSpec
from relay.errors import EventShapeError, StoreError, StoreUnavailableError, VerificationError
from relay.health import STORE, Health
from relay.ids import new_id
from relay.ingest.budget import BodyBudget, BudgetSpentError, Holding
from relay.metrics import Metrics
from relay.settings import BODY_TIMEOUT_S
from relay.sources import base as sources
from relay.sources.base import InboundEvent
from relay.store.base import IngestOutcome, NewEvent, Queue
from relay.workflow.plan import Arrival, plan_event
from relay.workflow.report import report_workflow

log = logging.getLogger("relay.ingest")


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLargeError(Exception):
    pass


class ClientDisconnectedError(Exception):
    pass


class BodyTimeoutError(Exception):
    pass


async def read_body(
    headers: Headers, receive: Receive, limit: int, holding: Holding | None = None
) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading it all. With
    ``holding``, the body's bytes are taken from its budget first (its whole Content-Length,
    else chunk by chunk): BudgetSpentError when the budget has no room."""
    length = headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > limit:
        raise BodyTooLargeError
    if holding is not None and declared is not None:
        holding.take(declared)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnectedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        if holding is not None and declared is None:
            holding.take(len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyDeadlines:
    """Body reads that must finish within ``timeout_s``, watched by one timer for all of them.

    A read still waiting at its deadline is cancelled, and ``read`` turns that cancellation
    (taken back with ``Task.uncancel``) into BodyTimeoutError: the caller answers 408 and the
    connection is closed. A timer per request (``asyncio.timeout``) cost about 10% of an
    ingest's CPU in ``bench/inprocess.py`` (bench/RESULTS.md); here a read costs a dict entry.
    Every read has the same timeout, so the reads are in deadline order and the timer is set
    for the first one."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reads: dict[asyncio.Task[Any], float] = {}  # each read's deadline, loop clock
        self._timer: asyncio.TimerHandle | None = None

    async def read(
        self, headers: Headers, receive: Receive, limit: int, holding: Holding | None = None
    ) -> bytes:
        """``read_body``, within the deadline."""
        task = asyncio.current_task()
        assert task is not None, "a body is read inside a task"
        loop = task.get_loop()
        self._reads[task] = deadline = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        try:
            return await read_body(headers, receive, limit, holding)
        except asyncio.CancelledError:
            if task in self._reads:  # cancelled by someone else: shutting down
                raise
            task.uncancel()
            raise BodyTimeoutError from None
        finally:
            self._reads.pop(task, None)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._reads.items()):
            if deadline > now:  # this read and every later one are still in time
                self._timer = loop.call_at(deadline, self._expire, loop)
                return
            del self._reads[task]
            task.cancel()
        self._timer = None


Answer = tuple[int, dict[str, Any]]


def _answer(status: int, outcome: str, **extra: Any) -> Answer:
    return status, {"status": outcome, **extra}


async def _send_json(send: Send, answer: Answer) -> None:
    status, content = answer
    body = _ENCODE(content).encode()
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    if status in _BODY_NOT_READ or content["status"] == "busy":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_JSON = b"application/json"
# Answers given before the request's body was read whole (too large, too slow): the connection
# is closed after them, instead of the server waiting on it for the rest of the body.
_BODY_NOT_READ = frozenset({408, 413})
# Built once, not per response; an answer is a flat dict: no cycles to look for.
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class IngestEndpoint:
    """Every source's endpoint, as an ASGI app for POST requests. ``config`` is read per
    request, so a reload (a rotated secret, a new source, new rules) takes effect at once
    without a restart."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Queue,
        clock: Callable[[], float],
        on_stored: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        body_timeout_s: float = BODY_TIMEOUT_S,
        health: Health | None = None,
        budget: BodyBudget | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.on_stored = on_stored
        self.metrics = Metrics() if metrics is None else metrics
        self.health = Health() if health is None else health
        self.budget = budget
        self._deadlines = BodyDeadlines(body_timeout_s)
        self._built: dict[int, tuple[SourceSpec, sources.Source]] = {}

    def _source(self, source: SourceSpec) -> sources.Source:
        cached = self._built.get(id(source))
        if cached is None or cached[0] is not source:
            if len(self._built) > 64:
                self._built.clear()
            cached = (source, source.build(self.clock))
            self._built[id(source)] = cached
        return cached[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        holding = None if self.budget is None else self.budget.holding()
        try:
            answer = await self.handle(scope["path"], Headers(scope=scope), receive, holding)
        except Exception:  # a bug: nothing was sent yet, and the sender will retry a 500
            log.exception("ingest failed", extra={"fields": {"path": scope["path"]}})
            answer = _answer(500, "error", retry=True)
        finally:
            if holding is not None:  # the body is answered for: its bytes go back
                holding.release()
        await _send_json(send, answer)

    async def handle(
        self, path: str, headers: Headers, receive: Receive, holding: Holding | None = None
    ) -> Answer:
        config = self.config()
        source = next((s for s in config.sources.values() if s.path == path), None)
        if source is None:
            return _answer(404, "not_found")
        if not source.complete:
            return self._reject(source.name, "no_secret", 503, "source has unset variables")
        try:
            body = await self._deadlines.read(headers, receive, source.max_body_bytes, holding)
        except BudgetSpentError:
            self.metrics.rejected(source.name, "busy")
            return _answer(503, "busy", retry=True)
        except BodyTimeoutError:
            return self._reject(
                source.name,
                "body_timeout",
                408,
                f"body not received within {self._deadlines.timeout_s:g} s",
            )
        except BodyTooLargeError:
            return self._reject(
                source.name,
                "body_too_large",
                413,
                f"body larger than {source.max_body_bytes} bytes",
            )
        except ClientDisconnectedError:
            return self._reject(source.name, "client_disconnected", 400, "client disconnected")
        try:
            events = self._source(source).verify(body, headers)
        except EventShapeError as exc:
            return self._reject(source.name, exc.reason, 400, str(exc))
        except VerificationError as exc:
            return self._reject(source.name, "bad_signature", 400, str(exc))

        stored: list[tuple[str, int]] = []  # (event id, deliveries) of each new event
        duplicates = 0
        failed = False
        for event in events:
            try:
                outcome = await self._store(config, source, event)
            except StoreError:
                failed = True  # what is stored stays: the sender's retry finds it as duplicates
                break
            if outcome is None:
                duplicates += 1
            else:
                stored.append(outcome)
        deliveries = sum(n for _, n in stored)
        if deliveries:
            self.on_stored()
        if failed:
            return _answer(503, "store_unavailable", retry=True)
        if source.type.batches or len(events) != 1:
            return _answer(
                200, "accepted", events=len(stored), duplicates=duplicates, deliveries=deliveries
            )
        if not stored:
            return _answer(200, "duplicate")
        return _answer(200, "accepted", event_id=stored[0][0], deliveries=deliveries)

    async def _store(
        self, config: Config, source: SourceSpec, event: InboundEvent
    ) -> tuple[str, int] | None:
        """Store one event with its deliveries and workflow steps (``relay.workflow.plan``):
        (event id, deliveries), or None if a duplicate."""
        now = self.clock()
        event_id = new_id("evt")
        arrival = Arrival(source.name, event.message_id, event_id, event.type, now)
        plan = plan_event(config.rules, event.event, arrival)
        record = NewEvent(event_id, source.name, event.message_id, event.type, now, event.body)
        fields: dict[str, Any] = {"source": source.name, "message_id": event.message_id}
        result = None
        try:
            if plan.steps:  # the steps' results are for the log and the metrics
                result = await self.store.admit(record, plan.deliveries, plan.steps)
                outcome = result.outcome
            else:
                outcome = await self.store.ingest(record, plan.deliveries)
        except StoreError as exc:
            fields.update(error=str(exc), outcome="store_unavailable")
            log.error("store cannot commit", extra={"fields": fields})
            self.metrics.received(source.name, event.type, "store_unavailable")
            self.health.failed(STORE, exc, transient=isinstance(exc, StoreUnavailableError))
            raise
        self.health.ok(STORE)
        fields["type"] = event.type
        if outcome is IngestOutcome.DUPLICATE:
            self.metrics.received(source.name, event.type, "duplicate")
            logs.emit(log, logging.INFO, "duplicate event", {**fields, "outcome": "duplicate"})
            return None
        self.metrics.received(source.name, event.type, "accepted")
        fields.update(
            event_id=event_id,
            deliveries=plan.sends,
            rules=sorted(plan.rules),
            outcome="accepted",
        )
        if result is not None or plan.scheduled or plan.problems:
            fields.update(report_workflow(plan, result, self.metrics))
        level = logging.WARNING if plan.problems else logging.INFO
        logs.emit(log, level, "event accepted", fields)
        return event_id, plan.sends

    def _reject(self, source: str, reason: str, status: int, detail: str) -> Answer:
        self.metrics.rejected(source, reason)
        fields = {"source": source, "reason": reason, "detail": detail, "outcome": "rejected"}
        logs.emit(log, logging.INFO, "request rejected", fields)
        return _answer(status, "rejected", reason=detail)
