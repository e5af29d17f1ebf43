"""Prometheus metrics with stable ``relay_*`` names, on a registry owned by one app.

Callers say what happened through typed methods (``delivered(sink, rule, latency_s)``,
``rejected(source, reason)``, ``worker_failed("claim")``, ...), so a renamed outcome is a type
error, not a silent zero on a dashboard.

Deliveries count notifications (one per event, rule and send, counted once at its final outcome);
attempts are counted separately. Label values for configured sinks and rules are created up
front, so dashboards and alerts see zeros instead of missing series.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Any, Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from relay import __version__

EventOutcome = Literal["accepted", "duplicate", "store_unavailable"]
WorkerStage = Literal["claim", "sweep", "tick", "delivery"]
# A group commit: one fsync, typically 0.5-5 ms; tens of ms or more mean a stalled disk.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
COMMIT_WRITES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)
OUTCOMES = ("delivered", "dead", "cancelled", "suppressed")
SUPPRESSION_REASONS = ("bounced", "complained", "unsubscribed", "manual")
UnsubscribeOutcome = Literal["unsubscribed", "already", "shown", "refused"]
UNSUBSCRIBE_ANSWERS = (("POST", "unsubscribed"), ("POST", "already"), ("POST", "refused"),
                       ("GET", "shown"), ("GET", "refused"))  # fmt: skip
PURGED_TABLES = ("events", "deliveries", "attempts")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
WORKER_STAGES: tuple[WorkerStage, ...] = get_args(WorkerStage)


def status_class(status: int | None) -> str:
    if status is None or not 200 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide: *_created series only add noise here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_* (CPU, memory, open files, start time) and python_info, as on any Python
        # exporter; and which relay this is.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        build = Gauge(
            "relay_build_info",
            "The running relay: its version and Python's (always 1).",
            ["version", "python"],
            registry=r,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self._event_counters: dict[tuple[str, str, str, str], Any] = {}
        self.events = Counter(
            "relay_events_received",
            "Webhook requests by source, event type and outcome "
            "(accepted, duplicate, rejected, store_unavailable) and rejection reason.",
            ["source", "type", "outcome", "reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "relay_deliveries",
            "Deliveries (notifications, not attempts) by final outcome: delivered, dead,"
            " cancelled (a later event cancelled it before it went out), suppressed (held back"
            " by once or throttle, or because its recipient is on the suppression list).",
            ["sink", "rule", "outcome"],
            registry=r,
        )
        self.scheduled_total = Counter(
            "relay_deliveries_scheduled",
            "Deliveries stored to go out later (a delay, a send window, a digest's own),"
            " counted when stored: scheduled ones are not in relay_queue_pending until due.",
            ["sink", "rule"],
            registry=r,
        )
        self.digest_events = Counter(
            "relay_digest_events",
            "Events added to a digest by rule, and by what they did to its batch: opened,"
            " joined, full (filled it: it goes out now), lead (first: now: sent at once).",
            ["rule", "outcome"],
            registry=r,
        )
        self.recipients_suppressed = Counter(
            "relay_recipients_suppressed",
            "Email recipients held back by the suppression list, by the suppression's reason"
            " (bounced, complained, unsubscribed, manual). An email none of whose main"
            " recipients may be mailed is not sent (it also counts in relay_deliveries_total as"
            " suppressed); one with others left goes to them.",
            ["sink", "rule", "reason"],
            registry=r,
        )
        self.unsubscribe_requests = Counter(
            "relay_unsubscribe_requests",
            "Requests to the one-click unsubscribe links by method and outcome: unsubscribed"
            " (a POST that added the suppression), already (a POST for an address already"
            " unsubscribed), shown (a GET: the confirmation page), refused (not a valid link:"
            " 4xx, nothing changed).",
            ["method", "outcome"],
            registry=r,
        )
        for method, outcome in UNSUBSCRIBE_ANSWERS:
            self.unsubscribe_requests.labels(method, outcome)
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Send attempts by sink and upstream status class.",
            ["sink", "status_class"],
            registry=r,
        )
        self.retries = Counter(
            "relay_delivery_retries",
            "Attempts that failed and were scheduled again.",
            ["sink"],
            registry=r,
        )
        self.latency = Histogram(
            "relay_delivery_latency_seconds",
            "Time from ingest to successful delivery.",
            ["sink"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.circuit = Gauge(
            "relay_sink_circuit_state",
            "Circuit breaker per sink: 0 closed, 1 open, 2 half-open.",
            ["sink"],
            registry=r,
        )
        self.queue_due = Gauge(
            "relay_queue_due", "Deliveries due now and not being worked on.", registry=r
        )
        self.queue_pending = Gauge(
            "relay_queue_pending", "Deliveries not yet delivered or dead.", registry=r
        )
        self.queue_oldest_due_age = Gauge(
            "relay_queue_oldest_due_age_seconds",
            "How long the oldest due delivery has waited.",
            registry=r,
        )
        self.reload_success = Gauge(
            "relay_config_last_reload_success",
            "1 if the last config (re)load succeeded.",
            registry=r,
        )
        self.reload_time = Gauge(
            "relay_config_last_reload_timestamp_seconds",
            "When the config was last (re)loaded.",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "relay_store_commit_seconds",
            "Group commits of the store by kind of write (ingest, results): from the start"
            " to durable. Every acknowledged webhook waited for one: a slow disk shows here.",
            ["kind"],
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        self.commit_writes = Histogram(
            "relay_store_commit_writes",
            "Writes (events, or attempt results) per group commit, by kind.",
            ["kind"],
            buckets=COMMIT_WRITES,
            registry=r,
        )
        self.commit_seconds.labels("ingest")  # ingest's series exist from the start, at zero
        self.commit_writes.labels("ingest")
        self.reloads = Counter(
            "relay_config_reloads",
            "Config reloads by outcome (success, failure).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
        self.worker_errors = Counter(
            "relay_worker_errors",
            "Worker steps that failed, by stage: claim (a sink's claim of due deliveries),"
            " sweep (dead-lettering deliveries of removed rules and sinks), tick, delivery (an"
            " attempt whose processing or recording failed: its delivery is tried again once"
            " its lease ends). Each is also logged as an error.",
            ["stage"],
            registry=r,
        )
        for stage in WORKER_STAGES:
            self.worker_errors.labels(stage)
        self.purged_rows = Counter(
            "relay_purged_rows",
            "Rows of delivered and dead history deleted by retention (rules.yaml `retention:`"
            " and `relay purge`), by table: events, deliveries, attempts.",
            ["table"],
            registry=r,
        )
        for table in PURGED_TABLES:
            self.purged_rows.labels(table)
        self.purge_time = Gauge(
            "relay_retention_last_purge_timestamp_seconds",
            "When the last retention pass finished (0: none yet).",
            registry=r,
        )

    def prepare(
        self,
        sinks: Iterable[str],
        sends: Iterable[tuple[str, str]],
        sources: Iterable[str],
        emails: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Create every label combination a config can produce, at zero: its ``sinks``, its
        ``sends`` as (rule, sink) pairs, its ``sources``, and its ``emails`` (the sends to an
        email sink, as (rule, sink) pairs)."""
        for rule, sink in sends:
            for outcome in OUTCOMES:
                self.deliveries.labels(sink, rule, outcome)
            self.scheduled_total.labels(sink, rule)
        for rule, sink in emails:
            for reason in SUPPRESSION_REASONS:
                self.recipients_suppressed.labels(sink, rule, reason)
        for sink in sinks:
            for cls in STATUS_CLASSES:
                self.attempts.labels(sink, cls)
            self.retries.labels(sink)
            self.latency.labels(sink)
            self.circuit.labels(sink)
        for source in sources:
            self.events.labels(source, "", "rejected", "bad_signature")

    # --- the store ------------------------------------------------------------------------------

    def commit(self, kind: str, seconds: float, writes: int) -> None:
        """Once per group commit (not per event): the label lookups cost nothing that matters."""
        self.commit_seconds.labels(kind).observe(seconds)
        self.commit_writes.labels(kind).observe(writes)

    # --- ingest ---------------------------------------------------------------------------------

    def received(self, source: str, event_type: str, outcome: EventOutcome) -> None:
        """One event of a request: accepted, a duplicate, or not stored (the store failed)."""
        self._event(source, event_type, outcome, "")

    def rejected(self, source: str, reason: str) -> None:
        """A request refused before any event was stored; ``reason`` is a short code."""
        self._event(source, "", "rejected", reason)

    def _event(self, source: str, event_type: str, outcome: str, reason: str) -> None:
        key = (source, event_type, outcome, reason)
        counter = self._event_counters.get(key)
        if counter is None:  # labels() costs a lock and a few checks: done once per key
            if len(self._event_counters) > 10_000:
                self._event_counters.clear()
            counter = self._event_counters[key] = self.events.labels(*key)
        counter.inc()

    # --- the worker -----------------------------------------------------------------------------

    def attempted(self, sink: str, status: int | None) -> None:
        """An attempt's answer: its HTTP status, or None when there was none (a timeout)."""
        self.attempts.labels(sink, status_class(status)).inc()

    def delivered(self, sink: str, rule: str, latency_s: float) -> None:
        """A delivery delivered, ``latency_s`` after its event was received."""
        self.deliveries.labels(sink, rule, "delivered").inc()
        self.latency.labels(sink).observe(max(latency_s, 0.0))

    def retried(self, sink: str) -> None:
        """An attempt failed and its delivery is due again later."""
        self.retries.labels(sink).inc()

    def dead(self, sink: str, rule: str) -> None:
        """A delivery dead-lettered (a permanent error, or its attempts used up)."""
        self.deliveries.labels(sink, rule, "dead").inc()

    def cancelled(self, sink: str, rule: str) -> None:
        """A delivery cancelled before it went out."""
        self.deliveries.labels(sink, rule, "cancelled").inc()

    def suppressed(self, sink: str, rule: str) -> None:
        """A delivery held back (once, throttle, the suppression list)."""
        self.deliveries.labels(sink, rule, "suppressed").inc()

    def recipient_suppressed(self, sink: str, rule: str, reason: str) -> None:
        """An email's recipient held back by the suppression list, for ``reason``."""
        self.recipients_suppressed.labels(sink, rule, reason).inc()

    def unsubscribe_request(self, method: str, outcome: UnsubscribeOutcome) -> None:
        """A request to a one-click unsubscribe link (``method`` GET or POST)."""
        self.unsubscribe_requests.labels(method, outcome).inc()

    def scheduled(self, sink: str, rule: str) -> None:
        """A delivery stored to go out later."""
        self.scheduled_total.labels(sink, rule).inc()

    def digested(self, rule: str, outcome: str) -> None:
        """An event added to a digest: opened, joined, full or lead."""
        self.digest_events.labels(rule, outcome).inc()

    def circuit_changed(self, sink: str, state: int) -> None:
        """A sink's circuit moved: 0 closed, 1 open, 2 half-open."""
        self.circuit.labels(sink).set(float(state))

    def worker_failed(self, stage: WorkerStage) -> None:
        """A worker step failed (also logged as an error)."""
        self.worker_errors.labels(stage).inc()

    # --- retention ------------------------------------------------------------------------------

    def purged(self, events: int, deliveries: int, attempts: int) -> None:
        """One purge batch deleted these rows."""
        for table, rows in zip(PURGED_TABLES, (events, deliveries, attempts), strict=True):
            if rows:
                self.purged_rows.labels(table).inc(rows)

    def purge_finished(self, when: float) -> None:
        self.purge_time.set(when)

    # --- the queue and config -------------------------------------------------------------------

    def queue(self, due: int, pending: int, oldest_due_age_s: float | None) -> None:
        self.queue_due.set(due)
        self.queue_pending.set(pending)
        self.queue_oldest_due_age.set(oldest_due_age_s or 0.0)

    def reloaded(self, ok: bool, when: float) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.reload_success.set(1 if ok else 0)
        if ok:
            self.reload_time.set(when)

    def render(self) -> bytes:
        return generate_latest(self.registry)
