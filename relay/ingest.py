"""The ingest endpoint: raw body → verify → parse → deduplicate and store → 2xx.

Ingest never waits on a sink. A 2xx means the event and its deliveries are durably committed;
anything the sender should not retry gets a 4xx, and a store that cannot commit gets a 503 so
the sender retries later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from relay.config import Config, Source
from relay.errors import StoreError, VerificationError
from relay.ids import idempotency_key, new_id
from relay.rules import match
from relay.store.base import IngestOutcome, NewDelivery, NewEvent, Store
from relay.verify import SvixVerifier

log = logging.getLogger("relay.ingest")


class BodyTooLargeError(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, outcome: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": outcome, **extra}, status_code=status)


class IngestEndpoint:
    """Every source's endpoint. ``config`` is read per request, so a reload (a rotated secret, a
    new source, new rules) takes effect at once without a restart."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        clock: Callable[[], float],
        on_stored: Callable[[], None] = lambda: None,
        observe: Callable[[str, str, str], None] = lambda source, type_, outcome: None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.on_stored = on_stored
        self.observe = observe
        self._verifiers: dict[int, tuple[Source, SvixVerifier]] = {}

    def _verifier(self, source: Source) -> SvixVerifier:
        cached = self._verifiers.get(id(source))
        if cached is None or cached[0] is not source:
            if len(self._verifiers) > 64:
                self._verifiers.clear()
            cached = (source, SvixVerifier(source.secrets, clock=self.clock))
            self._verifiers[id(source)] = cached
        return cached[1]

    async def handle(self, request: Request) -> Response:
        config = self.config()
        path = request.url.path
        source = next((s for s in config.sources.values() if s.path == path), None)
        if source is None:
            return _answer(404, "not_found")
        if not source.secrets:
            return self._reject(source.name, "no_secret", 503, "source has no signing secret")
        try:
            body = await read_body(request, source.max_body_bytes)
        except BodyTooLargeError:
            return self._reject(
                source.name,
                "body_too_large",
                413,
                f"body larger than {source.max_body_bytes} bytes",
            )
        except ClientDisconnect:
            return self._reject(source.name, "client_disconnected", 400, "client disconnected")
        try:
            verified = self._verifier(source).verify(body, request.headers)
        except VerificationError as exc:
            return self._reject(source.name, "bad_signature", 400, str(exc))
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            return self._reject(source.name, "bad_json", 400, "body is not valid JSON")
        if not isinstance(event, dict):
            return self._reject(source.name, "bad_json", 400, "body is not a JSON object")
        event_type = event.get("type")
        if not isinstance(event_type, str) or not event_type:
            return self._reject(source.name, "no_type", 400, "event has no 'type'")

        now = self.clock()
        event_id = new_id("evt")
        deliveries = [
            NewDelivery(
                id=new_id("dlv"),
                rule=rule.name,
                send_index=send.index,
                sink=send.sink,
                idempotency_key=idempotency_key(
                    source.name, verified.message_id, rule.name, send.index
                ),
                next_attempt_at=now,
            )
            for rule in match(config.rules, event)
            for send in rule.sends
        ]
        record = NewEvent(event_id, source.name, verified.message_id, event_type, now, body)
        try:
            outcome = await self.store.ingest(record, deliveries)
        except StoreError as exc:
            log.error(
                "store cannot commit",
                extra={
                    "fields": {
                        "svix_id": verified.message_id,
                        "error": str(exc),
                        "outcome": "store_unavailable",
                    }
                },
            )
            self.observe(source.name, event_type, "store_unavailable")
            return _answer(503, "store_unavailable", retry=True)
        if outcome is IngestOutcome.DUPLICATE:
            self.observe(source.name, event_type, "duplicate")
            log.info(
                "duplicate event",
                extra={
                    "fields": {
                        "svix_id": verified.message_id,
                        "type": event_type,
                        "outcome": "duplicate",
                    }
                },
            )
            return _answer(200, "duplicate")
        self.observe(source.name, event_type, "accepted")
        log.info(
            "event accepted",
            extra={
                "fields": {
                    "event_id": event_id,
                    "svix_id": verified.message_id,
                    "type": event_type,
                    "deliveries": len(deliveries),
                    "rules": sorted({d.rule for d in deliveries}),
                    "outcome": "accepted",
                }
            },
        )
        if deliveries:
            self.on_stored()
        return _answer(200, "accepted", event_id=event_id, deliveries=len(deliveries))

    def _reject(self, source: str, reason: str, status: int, detail: str) -> Response:
        self.observe(source, "", f"rejected:{reason}")
        log.info(
            "request rejected",
            extra={
                "fields": {
                    "source": source,
                    "reason": reason,
                    "detail": detail,
                    "outcome": "rejected",
                }
            },
        )
        return _answer(status, "rejected", reason=detail)
