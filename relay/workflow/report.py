"""What an ingest's workflow did, for its log line and the metrics: the deliveries scheduled,
cancelled (and those in flight, whose attempt decides), suppressed, and the digests joined."""

from __future__ import annotations

from typing import Any

from relay.metrics import Metrics
from relay.store.base import DeliveryStatus, NewDelivery
from relay.store.steps import Batched, IngestResult, Limited
from relay.workflow.plan import Plan


def report_workflow(plan: Plan, result: IngestResult | None, metrics: Metrics) -> dict[str, Any]:
    """Count what the plan and the store's steps did (``result``: None without steps); the log
    fields that say it."""
    fields: dict[str, Any] = {}
    stored: list[NewDelivery] = list(plan.deliveries)
    limits = [s for s in plan.steps if isinstance(s, Limited)]
    digests = [s for s in plan.steps if isinstance(s, Batched)]
    for outcome in result.steps if result is not None else ():
        if outcome.outcome == "cancelled":
            for _, sink in outcome.cancelled:
                metrics.cancelled(sink, outcome.rule)
            if outcome.cancelled or outcome.in_flight:
                fields.setdefault("cancelled", []).extend(i for i, _ in outcome.cancelled)
                fields.setdefault("in_flight", []).extend(outcome.in_flight)
        elif outcome.outcome in ("sent", "suppressed"):
            limited = next(s for s in limits if s.rule == outcome.rule)
            if outcome.outcome == "sent":
                stored += limited.deliveries
            else:
                fields.setdefault("suppressed", []).append(f"{limited.rule}: {limited.reason}")
                for d in limited.deliveries:
                    metrics.suppressed(d.sink, d.rule)
        else:
            batched = next(s for s in digests if s.rule == outcome.rule)
            metrics.digested(outcome.rule, outcome.outcome)
            stored += batched.leads if outcome.outcome == "lead" else ()
            fields.setdefault("digests", []).append(
                {"rule": outcome.rule, "batch_id": outcome.batch_id, "outcome": outcome.outcome}
            )
    scheduled = [d for d in stored if d.status is DeliveryStatus.SCHEDULED]
    for d in scheduled:
        metrics.scheduled(d.sink, d.rule)
    if scheduled:
        fields["scheduled"] = len(scheduled)
        fields["next_due_at"] = min(d.next_attempt_at for d in scheduled)
    if plan.problems:
        fields["problems"] = plan.problems
    return fields
