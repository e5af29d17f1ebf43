"""Workflow steps: what an ingest decides in the commit that stores its event, from the rows
already there, and what each step did.

Ingest plans them (``relay.workflow.plan``); a store writes them in order, after the event and
its unconditional deliveries, in one transaction (``relay.store.admit``):

- ``Cancel``: the rule's unsent deliveries (scheduled, pending, failed) with this cancel key
  become cancelled, the reason naming the cancelling event. One a worker is sending at that
  moment finishes its attempt (see ``Recorded.CANCELLED``).
- ``Limited``: deliveries of a rule with ``once`` or ``throttle``: stored as given while the rule
  has taken fewer than ``max`` sends for the key in the last ``per_s`` seconds (ever, for once),
  else stored as suppressed with the reason. The sends taken are one row per (rule, key), locked
  while it is read and written: two replicas never both take the last one.
- ``Batched``: an event's entry in the digest of (rule, key). It joins the open batch, or opens
  one (a unique row per open (rule, key): two replicas never open two; the loser joins the
  winner's). The event's place in it is a ``batched`` delivery per send; the batch's own
  deliveries (the digest, one per send) are due when it closes: at ``closes_at``, or once it has
  ``max`` events. With ``lead`` (``first: now``) the event that opens a batch is sent at once on
  its own and the batch holds the events after it; its digest is made by its first member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from relay.store.base import IngestOutcome, NewDelivery


@dataclass(frozen=True, slots=True)
class Cancel:
    rule: str
    cancel_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Limited:
    rule: str
    limit_key: str | None  # None: the key did not render; held back
    max: int
    per_s: float | None  # None: for ever (once)
    deliveries: tuple[NewDelivery, ...]
    reason: str  # why, when they are held back


@dataclass(frozen=True, slots=True)
class Batched:
    rule: str
    digest_key: str
    max: int
    lead: bool
    batch_id: str  # the id of the batch this event opens, if none is open
    closes_at: float  # when a batch this event opens closes (moved into the send window)
    due_full: float  # when the batch is due if this event fills it (now, or the window's opening)
    members: tuple[NewDelivery, ...]  # this event's place: status batched, one per send
    digests: tuple[NewDelivery, ...]  # the batch's own deliveries, if this event makes them
    leads: tuple[NewDelivery, ...] = ()  # with lead: sent at once if this event opens the batch


Step = Cancel | Limited | Batched

StepOutcome = Literal["cancelled", "sent", "suppressed", "opened", "joined", "full", "lead"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did: ``cancelled`` (``cancelled`` ids and sinks moved, ``in_flight`` ids a
    worker was sending), ``sent``/``suppressed`` (a limit), ``opened``/``joined``/``full``/
    ``lead`` (a digest: this event opened the batch, joined it, filled it, or went out at once
    as a lead)."""

    rule: str
    outcome: StepOutcome
    batch_id: str | None = None
    cancelled: tuple[tuple[str, str], ...] = ()
    in_flight: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: IngestOutcome
    steps: tuple[StepResult, ...] = ()


ACCEPTED = IngestResult(IngestOutcome.ACCEPTED)
DUPLICATE = IngestResult(IngestOutcome.DUPLICATE)
