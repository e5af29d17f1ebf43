"""Planning an event's ingest: its deliveries, and the workflow steps the store decides in the
same commit (``relay.store.steps``).

``plan_event`` goes through the rules in file order. A rule whose ``cancel_on`` names the
event's type cancels that rule's unsent deliveries with the event's key (``Cancel``). A rule the
event matches gets one delivery per send, due when its ``Timing`` says (``scheduled`` when that
is later than now, else ``pending``), carrying the rule's cancel key if it has ``cancel_on``;
with ``once``/``throttle`` they go to the store as a ``Limited`` step, with ``digest`` as a
``Batched`` entry. Nothing here reads the store: what the rows already say is the store's to
decide.

A key that does not render (a missing field) is a problem the caller logs, and never loses the
event: a cancel key is then left out (nothing can cancel those deliveries), a digest groups the
event under the empty key, and a limit holds the deliveries back (``suppressed``, saying why):
``once`` must never send twice, and without a key it cannot tell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.errors import TemplateError
from relay.ids import idempotency_key, new_id
from relay.store.base import DeliveryStatus, NewDelivery
from relay.store.steps import Batched, Cancel, Limited, Step
from relay.workflow.spec import Digest, Key, Limit, Timing, Workflow


class PlannedSend(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def sink(self) -> str: ...
    @property
    def timing(self) -> Timing | None: ...


class PlannedRule(Protocol):
    """What planning needs of a rule (``relay.rules.Rule``)."""

    @property
    def name(self) -> str: ...
    @property
    def sends(self) -> Sequence[PlannedSend]: ...
    @property
    def workflow(self) -> Workflow: ...
    def matches(self, event: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class Arrival:
    """The event being planned: where it came from, its ids, and when it was received."""

    source: str
    message_id: str
    event_id: str
    type: str
    received_at: float


@dataclass
class Plan:
    deliveries: list[NewDelivery] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # keys that did not render, for the log
    rules: list[str] = field(default_factory=list)  # the rules the event matched
    sends: int = 0  # the deliveries the event gets: one per send of each rule it matched

    @property
    def scheduled(self) -> int:
        return sum(d.status is DeliveryStatus.SCHEDULED for d in self.deliveries)


def plan_event(rules: Sequence[PlannedRule], event: Mapping[str, Any], arrival: Arrival) -> Plan:
    plan = Plan()
    for rule in rules:
        workflow, matched = rule.workflow, rule.matches(event)
        cancels = workflow.cancel is not None and workflow.cancel.matches_type(arrival.type)
        cancel_key = None  # rendered once: for the cancel this event makes, and its deliveries'
        if workflow.cancel is not None and (cancels or (matched and workflow.digest is None)):
            cancel_key = _key(plan, rule.name, "cancel key", workflow.cancel.key, event)
        if cancels and cancel_key is not None:
            reason = f"cancelled by {arrival.type} {arrival.message_id} ({arrival.event_id})"
            plan.steps.append(Cancel(rule.name, cancel_key, reason))
        if not matched:
            continue
        plan.rules.append(rule.name)
        plan.sends += len(rule.sends)
        if workflow.digest is not None:
            plan.steps.append(_batched(plan, rule, workflow.digest, event, arrival))
            continue
        deliveries = [_delivery(rule, s, event, arrival, cancel_key) for s in rule.sends]
        if workflow.limit is None:
            plan.deliveries.extend(deliveries)
        else:
            plan.steps.append(_limited(plan, rule.name, workflow.limit, deliveries, event))
    return plan


def _delivery(
    rule: PlannedRule,
    send: PlannedSend,
    event: Mapping[str, Any],
    arrival: Arrival,
    cancel_key: str | None = None,
    timing: Timing | None = None,
) -> NewDelivery:
    now = arrival.received_at
    timing = timing or send.timing
    due = now if timing is None else timing.due(now, event)
    return NewDelivery(
        id=new_id("dlv"),
        rule=rule.name,
        send_index=send.index,
        sink=send.sink,
        idempotency_key=idempotency_key(arrival.source, arrival.message_id, rule.name, send.index),
        next_attempt_at=due,
        status=DeliveryStatus.SCHEDULED if due > now else DeliveryStatus.PENDING,
        cancel_key=cancel_key,
    )


def _limited(
    plan: Plan,
    rule: str,
    limit: Limit,
    deliveries: list[NewDelivery],
    event: Mapping[str, Any],
) -> Limited:
    key = _key(plan, rule, f"{limit.kind} key", limit.key, event)
    if key is None:
        reason = f"{limit.label}: its key did not render, so relay cannot tell events apart"
    elif limit.kind == "once":
        reason = f"{limit.label}: already sent for key '{key}'"
    else:
        reason = f"{limit.label}: the limit for key '{key}' is reached"
    return Limited(rule, key, limit.max, limit.per_s, tuple(deliveries), reason)


def _batched(
    plan: Plan, rule: PlannedRule, digest: Digest, event: Mapping[str, Any], arrival: Arrival
) -> Batched:
    now = arrival.received_at
    key = "" if digest.key is None else _key(plan, rule.name, "digest key", digest.key, event)
    members = []
    digests = []
    for send in rule.sends:
        member = _delivery(rule, send, event, arrival, timing=Timing())
        members.append(_as(member, DeliveryStatus.BATCHED))
        digest_key = idempotency_key(
            arrival.source, arrival.message_id, f"{rule.name}#digest", send.index
        )
        digests.append(_as(member, DeliveryStatus.SCHEDULED, new_id("dlv"), digest_key))
    leads = [_delivery(rule, s, event, arrival, timing=digest.timing) for s in rule.sends]
    return Batched(
        rule=rule.name,
        digest_key=key or "",
        max=digest.max,
        lead=digest.lead,
        batch_id=new_id("bat"),
        closes_at=digest.timing.open_at(now + digest.window_s, event),
        due_full=digest.timing.open_at(now, event),
        members=tuple(members),
        digests=tuple(digests),
        leads=tuple(leads) if digest.lead else (),
    )


def _as(
    d: NewDelivery, status: DeliveryStatus, id: str | None = None, key: str | None = None
) -> NewDelivery:
    return NewDelivery(
        id=id or d.id,
        rule=d.rule,
        send_index=d.send_index,
        sink=d.sink,
        idempotency_key=key or d.idempotency_key,
        next_attempt_at=d.next_attempt_at,
        status=status,
    )


def _key(plan: Plan, rule: str, what: str, key: Key, event: Mapping[str, Any]) -> str | None:
    try:
        rendered = key.render(event)
    except TemplateError as exc:
        plan.problems.append(f"rule {rule}: {what} did not render: {exc.message}")
        return None
    if rendered is None:
        plan.problems.append(f"rule {rule}: {what} rendered empty")
    return rendered
