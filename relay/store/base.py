"""The store interface. Ingest and the worker talk only to this; backends implement it.

Times are Unix seconds (floats) passed in by the caller, so tests drive the clock.

Life of a delivery::

    pending ──claim──▶ (leased) ──send ok──────────▶ delivered
       ▲                  │ ──retryable error─────▶ failed (next_attempt_at set; claimable when due)
       │                  │ ──permanent / exhausted▶ dead   (reason kept)
       └── replay ◀───────┘ (dead/failed/delivered → pending, same idempotency key)
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


class IngestOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not tried yet
    FAILED = "failed"  # tried, failed, will be retried at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # permanent error or attempts exhausted; replayable


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str  # relay's own id, e.g. evt_...
    source: str  # the source name from rules.yaml, e.g. "clerk"
    message_id: str  # the sender's id (svix-id): the deduplication key within a source
    type: str
    received_at: float
    body: bytes  # the raw, verified JSON body


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str  # dlv_...
    rule: str
    send_index: int  # which send of the rule (0-based)
    sink: str
    idempotency_key: str  # stable for this delivery on every attempt and replay
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A due delivery leased to one worker, with what it needs to render and send."""

    id: str
    event_id: str
    source: str
    message_id: str
    event_type: str
    received_at: float
    body: bytes
    rule: str
    send_index: int
    sink: str
    idempotency_key: str
    attempts: int  # attempts already made before this one


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one send attempt. ``error`` must already be redacted."""

    delivery_id: str
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None


class Store(Protocol):
    async def open(self) -> None:
        """Connect and create the schema if needed."""

    async def close(self) -> None: ...

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        """Store the event and its deliveries in ONE durable commit, or report a duplicate.

        Deduplicates on (source, message_id). Raises StoreUnavailableError if it cannot commit.
        """

    async def claim_due(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str] | None = None
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries (pending/failed, next_attempt_at <= now, no live
        lease), oldest due first, optionally only for ``sinks``. A lease expires at now + lease_s."""

    async def record_delivered(self, attempt: Attempt) -> None:
        """Record a successful attempt; the delivery becomes delivered and its lease is dropped."""

    async def record_retry(self, attempt: Attempt, next_attempt_at: float) -> None:
        """Record a failed attempt; the delivery becomes failed, due again at next_attempt_at."""

    async def record_dead(self, attempt: Attempt | None, delivery_id: str, reason: str) -> None:
        """Dead-letter a delivery with a reason (recording the attempt, if one was made)."""

    async def release(self, delivery_ids: Collection[str]) -> None:
        """Drop leases without recording an attempt (graceful shutdown): due again at once."""

    async def release_all_leases(self) -> int:
        """Drop every lease (a single worker starting after a crash). Returns how many."""
