"""The worker's test harness: a real store, a fake clock and scripted in-memory sinks, on a
rules.yaml with four HTTP sinks (alpha, beta, gamma, delta).

Time is driven, never slept: ``worker.tick()`` claims what is due at the fake clock's now,
``worker.drain()`` waits for the attempts it started, and moving the clock makes retries due.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relay.config import Config
from relay.delivery.worker import Runtime, Worker
from relay.errors import DeliveryError, RetryableError
from relay.ids import idempotency_key
from relay.sinks.base import Message, Sink
from relay.store import AttemptRecord, DeliveryRecord, NewDelivery, NewEvent, Store

T0 = 1_700_000_000.0
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALPHA_TOKEN = "Bearer tok_live_9f8e7d6c5b4a"
ENV = {"CLERK_WEBHOOK_SIGNING_SECRET": SIGNING_SECRET, "ALPHA_TOKEN": ALPHA_TOKEN}

RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  alpha:
    type: http
    url: http://127.0.0.1:9/alpha
    headers:
      Authorization: ${ALPHA_TOKEN}
    retry: {max_attempts: 3, first_backoff_s: 10, max_backoff_s: 100}
  beta:
    type: http
    url: http://127.0.0.1:9/beta
    concurrency: 2
  gamma:
    type: http
    url: http://127.0.0.1:9/gamma
    timeout_s: 0.2
  delta:
    type: http
    url: http://127.0.0.1:9/delta
    rate_limit_per_s: 2
rules:
  - name: to-alpha
    events: user.created
    send:
      - sink: alpha
        template: body.yaml
  - name: to-beta
    events: user.created
    send:
      - sink: beta
  - name: to-gamma
    events: session.created
    send:
      - sink: gamma
  - name: to-delta
    events: organization.created
    send:
      - sink: delta
  - name: nickname
    events: user.updated
    send:
      - sink: alpha
        template: nickname.yaml
"""
TEMPLATES = {
    "body.yaml": 'body:\n  user: "{{ data.id }}"\n',
    "nickname.yaml": 'body:\n  nickname: "{{ data.nickname }}"\n',  # no such field: fails
}


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedSink:
    """Raises the scripted outcomes in turn (None = success); succeeds once the script is out."""

    script: list[BaseException | None] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


@dataclass
class BlockingSink:
    """Every send waits for ``release``; counts how many are in flight at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    sent: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.sent.append(message)


@dataclass
class Harness:
    store: Store
    config: Config
    clock: Clock
    sinks: dict[str, Sink]
    worker: Worker
    runtime: Runtime
    events: int = 0

    async def add(
        self,
        rule: str,
        sink: str,
        *,
        type: str = "user.created",
        data: Mapping[str, object] | None = None,
        send_index: int = 0,
    ) -> str:
        """Store one event with one delivery due now; returns the delivery id."""
        self.events += 1
        n = self.events
        message_id = f"msg_{n}"
        body = {"type": type, "object": "event", "data": data or {"id": f"user_{n}"}}
        event = NewEvent(
            f"evt_{n}", "clerk", message_id, type, self.clock(), json.dumps(body).encode()
        )
        delivery = NewDelivery(
            id=f"dlv_{n}",
            rule=rule,
            send_index=send_index,
            sink=sink,
            idempotency_key=idempotency_key("clerk", message_id, rule, send_index),
            next_attempt_at=self.clock(),
        )
        await self.store.ingest(event, [delivery])
        return delivery.id

    async def run_due(self) -> int:
        """Claim what is due now and wait for every attempt started; returns how many claimed."""
        claimed = await self.worker.tick()
        await self.worker.drain()
        return claimed

    async def delivery(self, delivery_id: str) -> DeliveryRecord:
        (found,) = [d for d in await self.store.list_deliveries() if d.id == delivery_id]
        return found

    async def attempts(self, delivery_id: str) -> list[AttemptRecord]:
        return await self.store.list_attempts(delivery_id)


def write_project(root: Path) -> tuple[Path, Path]:
    templates = root / "templates"
    templates.mkdir(parents=True)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    rules = root / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES), encoding="utf-8")
    return rules, templates


def harness_on(store: Store, config: Config) -> Callable[..., Harness]:
    """A factory of harnesses on ``store``: each names the sinks it scripts (the others
    succeed)."""

    def make(
        *,
        alpha: Sink | None = None,
        beta: Sink | None = None,
        gamma: Sink | None = None,
        delta: Sink | None = None,
    ) -> Harness:
        sinks: dict[str, Sink] = {
            "alpha": alpha or ScriptedSink(),
            "beta": beta or ScriptedSink(),
            "gamma": gamma or ScriptedSink(),
            "delta": delta or ScriptedSink(),
        }
        runtime = Runtime(config, sinks, loaded_at=T0)
        clock = Clock()
        worker = Worker(store, lambda: runtime, clock=clock)
        return Harness(store, config, clock, sinks, worker, runtime)

    return make


def retryable(text: str = "post to alpha: 503 Service Unavailable", **kw: float) -> DeliveryError:
    return RetryableError(text, status=503, **kw)
