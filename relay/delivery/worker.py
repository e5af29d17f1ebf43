"""The worker: claim due deliveries, render, send, record — with per-sink concurrency.

Each sink has its own gate (``relay.delivery.gate``: its free slots, its pace and its circuit), and
the worker claims work per sink only as far as that gate allows, so a slow, rate-limited or failing
sink never holds back the others. A delivery is leased while it is being worked on; if the process
dies, the lease expires (or, for the single embedded worker, is dropped at start) and the delivery
is attempted again with the same idempotency key.

Workflows (``relay.workflow``): a tick first makes the scheduled deliveries that have come due
pending (``promote_due``, at most once per ``poll_s``: a scheduled send goes out within about
that of its due time). A claimed delivery whose send has a window and comes due outside it (a
retry, a replay, a reload that changed the window) is moved to the window's next opening, without
an attempt. A digest is rendered over its batch's events (``events``, ``count``). A delivery
cancelled while it was being sent keeps the outcome of that attempt only if it delivered; a
failure is recorded and never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay import deepjson, logs
from relay.config import Config, SinkSpec
from relay.delivery.breaker import CircuitState
from relay.delivery.gate import GateChange, SinkGate
from relay.delivery.policy import next_delay
from relay.delivery.recipients import screen
from relay.delivery.snapshot import snapshot
from relay.delivery.workflow import defer_outside_window, digest_events
from relay.errors import (
    DeliveryError,
    PayloadError,
    PermanentError,
    RetryableError,
    StoreUnavailableError,
    TemplateError,
)
from relay.health import CLAIMS, Health
from relay.metrics import Metrics
from relay.rules import Rule, Send
from relay.secret import redact
from relay.sinks.base import MESSAGE_ERRORS, Message, Sink, message_error
from relay.store.base import Attempt, ClaimedDelivery, Queue, Recorded
from relay.workflow.spec import Timing

log = logging.getLogger("relay.worker")
MAX_ERROR_CHARS = 1000
ORPHAN_CHECK_S = 30.0  # how often to look for deliveries whose sink was removed
# A delivery for a rule or sink this replica does not know, of an event received after its
# config was loaded, was made by a replica with newer rules (a rolling deploy): leave it to
# them for up to UNKNOWN_GRACE_S, looking again every UNKNOWN_RETRY_S; after that it is dead.
UNKNOWN_GRACE_S = 15 * 60.0
UNKNOWN_RETRY_S = 5.0


@dataclass
class Runtime:
    """What the worker delivers with: the current config and the sinks built from it, and when
    that config was loaded (Unix seconds)."""

    config: Config
    sinks: dict[str, Sink]
    loaded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where a claimed delivery goes under the current config: its send, and the sink (and its
    spec) that send names."""

    send: Send
    sink: Sink
    spec: SinkSpec
    rule: Rule | None = None

    @property
    def timing(self) -> Timing | None:
        """When the send may go out: its own timing, or its digest's (the rule's window)."""
        digest = None if self.rule is None else self.rule.workflow.digest
        return self.send.timing or (digest.timing if digest is not None else None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: ``error`` None when it was delivered."""

    started: float  # Unix seconds
    duration_ms: float
    error: DeliveryError | None


@dataclass
class Worker:
    store: Queue
    runtime: Callable[[], Runtime]
    clock: Callable[[], float] = time.time
    poll_s: float = 0.5
    lease_margin_s: float = 60.0
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=Health)  # hears how each claim went
    _gates: dict[str, SinkGate] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: bool = False
    _orphans_checked_at: float = float("-inf")
    _promoted_at: float = float("-inf")

    def attempt_deadline_s(self, timeout_s: float) -> float:
        """How long one attempt may run in all: a sink's ``timeout_s`` bounds each wait (connect,
        send, each read), so a receiver trickling its answer could hold an attempt for ever;
        this bound ends it well inside the lease (``timeout_s`` + ``lease_margin_s``), so no
        other claim can send the delivery while this attempt is still going."""
        return timeout_s + min(timeout_s, self.lease_margin_s / 2)

    def wake(self) -> None:
        """New work may be due (called by ingest after a commit)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and process due deliveries until ``stop()``."""
        while not self._stopping:
            self._wake.clear()  # before the tick: a wake-up during it is not lost
            try:
                claimed = await self.tick()
            except Exception as exc:  # never let one bad tick end delivery for good
                log.exception("worker tick failed", extra={"fields": {"error": str(exc)}})
                self.metrics.worker_failed("tick")
                claimed = 0
            if claimed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def tick(self) -> int:
        """Make due scheduled deliveries pending, then claim what each sink has room for and
        start working on it; returns how many were claimed."""
        runtime = self.runtime()
        now = self.clock()
        total = 0
        if not 0 <= now - self._promoted_at < self.poll_s:  # at most once a poll: a write
            self._promoted_at = now  # statement on PostgreSQL, and a busy worker ticks often
            try:
                await self.store.promote_due(now)
            except Exception as exc:  # the claims below still take what is pending
                log.error(
                    "promoting scheduled deliveries failed", extra={"fields": {"error": str(exc)}}
                )
                self.metrics.worker_failed("claim")
        known_rules = [rule.name for rule in runtime.config.rules]  # the rest: see the sweep
        for name, spec in runtime.config.sinks.items():
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = SinkGate(spec.settings)
            else:
                gate.configure(spec.settings)  # a reload may have changed them
            before = gate.breaker.state
            free = gate.allowance(now)
            if gate.breaker.state is not before:
                self._gate_report(name, GateChange(circuit_from=before))
            if free <= 0:
                continue
            lease_s = spec.settings.timeout_s + self.lease_margin_s
            try:
                batch = await self.store.claim_due(now, free, lease_s, sink=name, rules=known_rules)
            except Exception as exc:
                log.error("claim failed", extra={"fields": {"sink": name, "error": str(exc)}})
                self.metrics.worker_failed("claim")
                self.health.failed(CLAIMS, exc, transient=isinstance(exc, StoreUnavailableError))
                batch = []
            else:
                self.health.ok(CLAIMS)
            if not batch:
                gate.unused()
                continue
            gate.started(len(batch))
            for claimed in batch:
                task = asyncio.create_task(self._process(claimed, gate))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            total += len(batch)
        if now - self._orphans_checked_at >= ORPHAN_CHECK_S:
            self._orphans_checked_at = now
            try:
                total += await self._dead_letter_orphans(runtime, now)
            except Exception as exc:  # a locked store must not end the worker: try next time
                log.error("orphan sweep failed", extra={"fields": {"error": str(exc)}})
                self.metrics.worker_failed("sweep")
        return total

    def circuit_states(self) -> dict[str, CircuitState]:
        return {name: gate.breaker.state for name, gate in self._gates.items()}

    def _gate_report(self, sink: str, change: GateChange) -> None:
        """Log (and count) what an attempt's outcome changed at its sink's gate."""
        gate = self._gates.get(sink)
        if gate is None:
            return
        if change.paused_s is not None:
            fields = {"sink": sink, "pause_s": round(change.paused_s, 1)}
            logs.emit(log, logging.WARNING, "sink rate-limited: paused", fields)
        before = change.circuit_from
        if before is None:
            return
        breaker = gate.breaker
        level = logging.WARNING if breaker.state is CircuitState.OPEN else logging.INFO
        state = breaker.state.name.lower().replace("_", "-")
        fields = {
            "sink": sink,
            "from": before.name.lower(),
            "cooldown_s": breaker.cooldown_s,
            "consecutive_failures": breaker.failures,
        }
        log.log(level, f"circuit {state}", extra={"fields": fields})
        self.metrics.circuit_changed(sink, int(breaker.state))

    async def _dead_letter_orphans(self, runtime: Runtime, now: float) -> int:
        """Deliveries for a rule or sink this config does not have: dead with a reason when it
        was removed, left to another replica when it is newer (see ``_unknown``)."""
        config = runtime.config
        known_rules = [rule.name for rule in config.rules]
        orphans = await self.store.claim_orphans(
            now, 100, self.lease_margin_s, sinks=list(config.sinks), rules=known_rules
        )
        for claimed in orphans:
            if claimed.sink not in config.sinks:
                reason = f"sink '{claimed.sink}' is no longer configured in rules.yaml"
            else:
                reason = _rule_gone(claimed)
            await self._unknown(claimed, runtime, reason)
        return len(orphans)

    async def _unknown(self, claimed: ClaimedDelivery, runtime: Runtime, reason: str) -> None:
        """A delivery whose rule or sink is not in this replica's config: removed (dead, with
        the reason) — or, during a rolling deploy, added by a replica with newer rules (left to
        it: due again later, no attempt counted)."""
        now = self.clock()
        newer = claimed.received_at >= runtime.loaded_at
        if newer and now - claimed.received_at < UNKNOWN_GRACE_S:
            await self.store.defer(claimed.id, now + UNKNOWN_RETRY_S, lease=claimed.lease_until)
            log.info(
                "delivery left to a replica with newer rules",
                extra={
                    "fields": {
                        "delivery_id": claimed.id,
                        "rule": claimed.rule,
                        "sink": claimed.sink,
                        "reason": reason,
                    }
                },
            )
            return
        await self._dead(claimed, None, reason)

    async def drain(self) -> None:
        """Wait for every attempt in flight to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def begin_stop(self) -> None:
        """Claim nothing more (attempts in flight go on); safe to call from a signal handler."""
        self._stopping = True
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let attempts in flight finish for up to ``grace_s``, then release."""
        self.begin_stop()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _process(self, claimed: ClaimedDelivery, gate: SinkGate) -> None:
        try:
            await self.deliver(claimed)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release([claimed.id], lease=claimed.lease_until))
            raise
        except Exception as exc:  # a bug, or the store failing: the lease will expire
            log.exception(
                "delivery crashed", extra={"fields": {"delivery_id": claimed.id, "error": str(exc)}}
            )
            self.metrics.worker_failed("delivery")
        finally:
            gate.finished()
            self._wake.set()

    async def deliver(self, claimed: ClaimedDelivery) -> None:
        """One attempt for one claimed delivery, recorded with its outcome: find where it goes
        now, render its message, send it once, record what happened."""
        runtime = self.runtime()
        target = await self._resolve(claimed, runtime)
        if target is None or await self._outside_window(claimed, target):
            return
        message = await self._render(claimed, target, runtime)
        if message is not None:
            message = await self._screen(claimed, target, message)
        if message is None:
            return
        outcome = await self._attempt(message, target)
        rendered = snapshot(message.payload, runtime.config.secret_values)
        await self._record(claimed, target, outcome, runtime, rendered)

    async def _resolve(self, claimed: ClaimedDelivery, runtime: Runtime) -> Target | None:
        """The delivery's send and sink in the current config; None when either is gone (it
        is then dead, or left to a replica with newer rules)."""
        rule = next((r for r in runtime.config.rules if r.name == claimed.rule), None)
        if rule is None or claimed.send_index >= len(rule.sends):
            await self._unknown(claimed, runtime, _rule_gone(claimed))
            return None
        send = rule.sends[claimed.send_index]
        sink = runtime.sinks.get(send.sink)
        spec = runtime.config.sinks.get(send.sink)
        if sink is None or spec is None:
            await self._dead(claimed, None, f"sink '{send.sink}' is no longer configured")
            return None
        return Target(send, sink, spec, rule)

    async def _outside_window(self, claimed: ClaimedDelivery, target: Target) -> bool:
        """Moved to its send window's next opening (``relay.delivery.workflow``)?"""
        opening = await defer_outside_window(self.store, claimed, target.timing, self.clock())
        if opening is None:
            return False
        fields = {
            "delivery_id": claimed.id,
            "rule": claimed.rule,
            "sink": claimed.sink,
            "next_attempt_at": opening,
            "outcome": "rescheduled",
        }
        logs.emit(log, logging.INFO, "delivery outside its send window: rescheduled", fields)
        return True

    async def _render(
        self, claimed: ClaimedDelivery, target: Target, runtime: Runtime
    ) -> Message | None:
        """The message to send; None when the template fails (the delivery is then dead: a
        retry would render the same)."""
        try:
            event = deepjson.loads(claimed.body)  # any depth: what the sender signed
            batch = await digest_events(self.store, claimed, target.rule, event)
            return Message(
                delivery_id=claimed.id,
                idempotency_key=claimed.idempotency_key,
                event_id=claimed.message_id,
                event_type=claimed.event_type,
                rule=claimed.rule,
                sink=target.send.sink,
                payload=target.send.render(batch[0] if batch else event, batch),
                event=event if batch is None else {"count": len(batch), "events": batch},
            )
        except (TemplateError, PayloadError, ValueError) as exc:  # ValueError: a body not JSON
            kinds = {TemplateError: "template", PayloadError: "message"}
            kind = kinds.get(type(exc), "stored event")
            error = self._clean(f"{kind}: {exc}", runtime)
            attempt = Attempt(claimed.id, self.clock(), 0.0, None, error)
            await self._dead(claimed, attempt, error or "template error")
            return None

    async def _screen(
        self, claimed: ClaimedDelivery, target: Target, message: Message
    ) -> Message | None:
        """An email without its suppressed recipients (``relay.delivery.recipients``); None
        when it goes to none of them (the delivery is then suppressed, with the reason)."""
        recipients = target.spec.type.recipients
        if recipients is None:
            return message
        unsubscribe = target.send.unsubscribe
        category = None if unsubscribe is None else unsubscribe.category
        screened = await screen(self.store, recipients, category, message.payload)
        if not screened.held:
            return message
        sink, rule = target.send.sink, claimed.rule
        for suppression in screened.held:
            self.metrics.recipient_suppressed(sink, rule, suppression.reason)
        fields = {"delivery_id": claimed.id, "event_id": claimed.event_id, "rule": rule,
                  "sink": sink, "reason": screened.reason()}  # fmt: skip
        if screened.payload is None:
            reason = f"suppressed: {screened.reason()}"
            recorded = await self.store.record_suppressed(
                claimed.id, reason, lease=claimed.lease_until
            )
            if self._report(recorded, "suppressed", fields):
                self.metrics.suppressed(sink, rule)
            return None
        logs.emit(log, logging.INFO, "recipients suppressed: left out of the email", fields)
        return dataclasses.replace(message, payload=screened.payload)

    async def _attempt(self, message: Message, target: Target) -> Outcome:
        """Send once, within the attempt's deadline; the sink's gate hears how it went."""
        started, t0 = self.clock(), time.monotonic()
        name, timeout_s = target.send.sink, target.spec.settings.timeout_s
        error: DeliveryError | None = None
        deadline_s = self.attempt_deadline_s(timeout_s)
        deadline = asyncio.timeout(deadline_s)
        try:
            async with deadline:
                await target.sink.send(message)
        except DeliveryError as exc:
            error = exc
        except MESSAGE_ERRORS as exc:  # the message's own fault, whatever the sink (a plugin)
            error = message_error(name, exc)
        except Exception as exc:
            error = RetryableError(
                f"{name}: the attempt did not finish within {deadline_s:g} s (timeout_s"
                f" {timeout_s:g} s bounds each wait, this deadline the whole attempt)"
                if deadline.expired()
                else f"{name}: unexpected {type(exc).__name__}: {exc}"
            )
        duration_ms = (time.monotonic() - t0) * 1000
        gate = self._gates.get(name)
        if gate is not None:
            self._gate_report(name, gate.record(self.clock(), error))
        self.metrics.attempted(name, 200 if error is None else error.status)
        return Outcome(started, duration_ms, error)

    async def _record(
        self,
        claimed: ClaimedDelivery,
        target: Target,
        outcome: Outcome,
        runtime: Runtime,
        rendered: str,
    ) -> None:
        """Record the attempt (with what it ``rendered``, as stored): delivered, due again after
        the retry policy's delay, or dead."""
        number = claimed.attempts + 1
        fields = {
            "delivery_id": claimed.id,
            "event_id": claimed.event_id,
            "svix_id": claimed.message_id,
            "rule": claimed.rule,
            "sink": target.send.sink,
            "sink_type": target.spec.type.name,
            "attempt": number,
            "duration_ms": round(outcome.duration_ms, 1),
            "received_at": claimed.received_at,
        }
        lease, error = claimed.lease_until, outcome.error
        sink, rule = target.send.sink, claimed.rule
        if error is None:
            attempt = Attempt(claimed.id, outcome.started, outcome.duration_ms, 200, None, rendered)
            recorded = await self.store.record_delivered(attempt, lease=lease)
            if self._report(recorded, "delivered", fields):
                self.metrics.delivered(sink, rule, self.clock() - claimed.received_at)
            return
        text = self._clean(str(error), runtime)
        attempt = Attempt(
            claimed.id, outcome.started, outcome.duration_ms, error.status, text, rendered
        )
        delay = next_delay(target.spec.settings.retry, number, error)
        fields.update(status=error.status, error=text)
        if delay is None:
            why = (
                "permanent error"
                if isinstance(error, PermanentError)
                else f"gave up after {number} attempts"
            )
            recorded = await self.store.record_dead(
                attempt, claimed.id, f"{why}: {text}", lease=lease
            )
            if self._report(recorded, "dead", fields):
                self.metrics.dead(sink, rule)
        else:
            recorded = await self.store.record_retry(attempt, self.clock() + delay, lease=lease)
            if self._report(recorded, "retry", {**fields, "retry_in_s": round(delay, 1)}):
                self.metrics.retried(sink)

    def _report(self, recorded: Recorded, outcome: str, fields: dict[str, Any]) -> bool:
        """Log the outcome; True if it moved the delivery as the attempt said (the caller
        counts it). A delivery cancelled while the attempt ran was left cancelled by a failure
        (the cancel won: no retry, counted cancelled here) and moved to delivered by a success
        (the send won); both are said. Otherwise the attempt outlived its claim's lease (the
        process stalled past it, say) and the delivery has been claimed again (or replayed)
        since: the attempt is in its history, the delivery is left to whoever holds it now, and
        this is only logged. If such an attempt delivered, the receiver may get the message
        twice, with the same idempotency key."""
        if recorded is Recorded.CANCELLED:
            won = outcome == "delivered"
            message = (
                "delivery delivered: a cancel came while it was being sent, the send won"
                if won
                else "attempt failed after a cancel: the delivery stays cancelled, no retry"
            )
            fields = {**fields, "result": outcome, "outcome": "delivered" if won else "cancelled"}
            logs.emit(log, logging.INFO if won else logging.WARNING, message, fields)
            if not won:
                self.metrics.cancelled(fields["sink"], fields["rule"])
            return won
        if recorded is Recorded.MOVED:
            level = logging.WARNING if outcome == "dead" else logging.INFO
            logs.emit(log, level, f"delivery {outcome}", {**fields, "outcome": outcome})
            return True
        logs.emit(
            log,
            logging.WARNING,
            "attempt outlived its lease: kept in the history, the delivery left to its new claim",
            {**fields, "result": outcome, "outcome": "lease_lost"},
        )
        return False

    async def _dead(self, claimed: ClaimedDelivery, attempt: Attempt | None, reason: str) -> None:
        recorded = await self.store.record_dead(
            attempt, claimed.id, reason, lease=claimed.lease_until
        )
        fields = {
            "delivery_id": claimed.id,
            "rule": claimed.rule,
            "sink": claimed.sink,
            "error": reason,
            "attempt": claimed.attempts + 1,
        }
        if self._report(recorded, "dead", fields):
            self.metrics.dead(claimed.sink, claimed.rule)

    @staticmethod
    def _clean(text: str, runtime: Runtime) -> str:
        """An error text as stored and logged: secrets redacted, clipped, and storable: a NUL
        (which PostgreSQL's text cannot hold) shown as ``\\x00``, a lone surrogate (which no
        database can encode) as ``\\udcff``. Either would make the record fail, and the
        delivery would be sent again each time its lease ended."""
        text = redact(text, runtime.config.secret_values)
        text = text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
        return text[:MAX_ERROR_CHARS]


def _rule_gone(claimed: ClaimedDelivery) -> str:
    return (
        f"rule '{claimed.rule}' (send {claimed.send_index}) is no longer configured in rules.yaml"
    )
