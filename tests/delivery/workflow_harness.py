"""The workflow tests' harness: a rules.yaml with every workflow key, events planned and stored
as ingest does (``plan_event``, then ``admit`` in one commit), a worker on a fake clock and
scripted in-memory sinks.

Time is driven, never slept: ``at(t)`` moves the clock, ``run_due()`` ticks the worker (it
promotes what has come due, claims and sends) and waits for the attempts it started.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay import deepjson
from relay.config import Config, load_config
from relay.delivery.worker import Runtime, Worker
from relay.sinks.base import Message, Sink
from relay.store import DeliveryRecord, NewEvent, Store
from relay.store.steps import IngestResult
from relay.workflow.plan import Arrival, plan_event
from tests.delivery.worker_harness import ENV, Clock, ScriptedSink

DAY = 86400.0

RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  email:
    type: http
    url: http://127.0.0.1:9/email
    retry: {max_attempts: 3, first_backoff_s: 10, max_backoff_s: 10}
  slack:
    type: http
    url: http://127.0.0.1:9/slack
rules:
  - name: onboarding
    events: user.created
    cancel_on: [user.deleted]
    key: "{{ data.id }}"
    send:
      - sink: email
        template: welcome.yaml
      - sink: email
        template: tips.yaml
        delay: 3d
        window:
          days: mon-fri
          hours: "09:00-17:00"
          timezone: "{{ data.public_metadata.timezone }}"
          default_timezone: Europe/Berlin
  - name: signups
    events: user.created
    digest: {window: 10m, max: 3}
    send:
      - sink: slack
        template: digest.yaml
  - name: sessions
    events: session.created
    digest: {window: 10m, first: now, key: "{{ data.user_id }}"}
    send:
      - sink: slack
        template: digest.yaml
  - name: office-digest
    events: organization.updated
    window: {days: mon-fri, hours: "09:00-17:00", timezone: Europe/Berlin}
    digest: {window: 10m}
    send:
      - sink: slack
        template: digest.yaml
  - name: welcome-once
    events: user.updated
    once: "{{ data.email }}"
    send:
      - sink: email
        template: welcome.yaml
  - name: org-alert
    events: organization.created
    throttle: {key: "{{ data.owner }}", max: 2, per: 1h}
    send:
      - sink: slack
        template: welcome.yaml
"""
TEMPLATES = {
    "welcome.yaml": 'body:\n  welcome: "{{ data.id }}"\n',
    "tips.yaml": 'body:\n  tips: "{{ data.id }}"\n',
    "digest.yaml": (
        "body:\n"
        '  count: "{{ count }}"\n'
        "  ids: \"{{ events | map(attribute='data') | map(attribute='id') | list }}\"\n"
    ),
}


def utc(text: str) -> float:
    """Unix seconds of a UTC time written ``2026-03-27 16:30``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load(root: Path, rules: str = RULES) -> Config:
    templates = root / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    (root / "rules.yaml").write_text(textwrap.dedent(rules), encoding="utf-8")
    return load_config(root / "rules.yaml", templates, env=ENV)


@dataclass
class Flow:
    """A store, the config, a fake clock, the sinks' messages and a worker."""

    store: Store
    config: Config
    clock: Clock = field(default_factory=Clock)
    email: ScriptedSink = field(default_factory=ScriptedSink)
    slack: ScriptedSink = field(default_factory=ScriptedSink)
    events: int = 0
    worker: Worker = field(init=False)
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        sinks: dict[str, Sink] = {"email": self.email, "slack": self.slack}
        self.runtime = Runtime(self.config, sinks, loaded_at=0.0)
        self.worker = Worker(self.store, lambda: self.runtime, clock=self.clock)

    def reload(self, config: Config) -> None:
        """What a hot reload does for the worker: the next claims use the new rules."""
        self.config = config
        self.runtime = Runtime(config, self.runtime.sinks, loaded_at=self.clock())

    def at(self, t: float) -> None:
        self.clock.now = t

    async def post(self, type: str, data: Mapping[str, Any]) -> tuple[str, IngestResult]:
        """Receive an event now, as ingest stores it; returns its id and what its steps did."""
        self.events += 1
        message_id = f"msg_{self.events}"
        envelope = {"type": type, "object": "event", "data": dict(data)}
        # Ids in posting order: events posted at one fake instant tie on received_at, and the
        # store breaks ties by id (real ids are ordered by the millisecond, then random).
        event_id = f"evt_{self.events:022x}"
        now = self.clock()
        plan = plan_event(
            self.config.rules, envelope, Arrival("clerk", message_id, event_id, type, now)
        )
        body = deepjson.dumps(envelope).encode()  # any depth, as a sender may sign it
        record = NewEvent(event_id, "clerk", message_id, type, now, body)
        return event_id, await self.store.admit(record, plan.deliveries, plan.steps)

    async def run_due(self) -> int:
        claimed = await self.worker.tick()
        await self.worker.drain()
        return claimed

    async def deliveries(self, event_id: str, rule: str | None = None) -> list[DeliveryRecord]:
        found = await self.store.list_deliveries(event_id=event_id, rule=rule)
        return sorted(found, key=lambda d: d.send_index)

    def sent(self, sink: str = "email") -> list[dict[str, Any]]:
        messages: list[Message] = (self.email if sink == "email" else self.slack).messages
        return [m.payload["body"] for m in messages]
