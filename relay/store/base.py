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
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from relay.errors import StoreError


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
    # The lease this claim set: the claim's fencing token. A delivery is claimed again only
    # after its lease has passed, so a later claim always sets a later lease; record_* and the
    # other changes a worker makes take it, and move the delivery only while it is still its lease.
    lease_until: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one send attempt. ``error`` must already be redacted."""

    delivery_id: str
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ResultChange:
    """What recording one result changes: an attempt row (if there was an attempt) and the
    delivery's new state. ``updated_at`` is when the attempt ended; without one, the wall clock.
    """

    delivery_id: str
    attempt: Attempt | None
    status: DeliveryStatus
    next_attempt_at: float | None
    last_error: str | None
    updated_at: float
    delivered_at: float | None
    lease: float | None = None  # the claim's lease_until, when the result is a claim's

    def holds(self, lease_until: float | None) -> bool:
        """Whether this result may move the delivery, whose lease is now ``lease_until``: always
        without a lease of its own, else only while the claim's lease is still the delivery's."""
        return self.lease is None or lease_until == self.lease

    def writes(
        self, found: Sequence[Any] | None
    ) -> tuple[dict[str, Any] | None, tuple[Any, ...] | None]:
        """What recording this result writes, given what the store read of its delivery under
        the write lock, ``(attempts, last attempt number, lease_until)`` or None: the attempt's
        row (None without an attempt) and the delivery's update (None if this change no longer
        holds its lease). A delivery that is gone is a StoreError."""
        if found is None:
            raise StoreError(f"{self.describe()}: no such delivery")
        attempts, last_number, lease_until = found
        row = self.attempt_row(last_number) if self.attempt is not None else None
        return row, self.delivery_update(attempts) if self.holds(lease_until) else None

    def describe(self) -> str:
        """What this write is, for errors (as ``PendingIngest.describe``)."""
        return f"record {self.status} for delivery {self.delivery_id}"

    def attempt_row(self, last_number: int) -> dict[str, Any]:
        """The attempt's row, numbered after the last attempt ever recorded for the delivery."""
        assert self.attempt is not None
        return {**asdict(self.attempt), "number": last_number + 1, "outcome": self.status.value}

    def delivery_update(self, attempts_so_far: int) -> tuple[Any, ...]:
        """status, attempts, next_attempt_at, last_error, updated_at, delivered_at, id."""
        attempts = attempts_so_far + 1 if self.attempt is not None else attempts_so_far
        return (
            self.status.value,
            attempts,
            self.next_attempt_at,
            self.last_error,
            self.updated_at,
            self.delivered_at,
            self.delivery_id,
        )


class RecordsResults:
    """``record_delivered``, ``record_retry`` and ``record_dead`` for a store that implements
    ``_apply(change)``: add the attempt and move the delivery, in one transaction."""

    async def record_delivered(self, attempt: Attempt, *, lease: float | None = None) -> bool:
        status = DeliveryStatus.DELIVERED
        return await self._record(attempt.delivery_id, attempt, status, None, None, lease)

    async def record_retry(
        self, attempt: Attempt, next_attempt_at: float, *, lease: float | None = None
    ) -> bool:
        status, error = DeliveryStatus.FAILED, attempt.error
        return await self._record(
            attempt.delivery_id, attempt, status, next_attempt_at, error, lease
        )

    async def record_dead(
        self, attempt: Attempt | None, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> bool:
        if attempt is not None and attempt.delivery_id != delivery_id:
            raise ValueError(f"attempt is for {attempt.delivery_id}, not {delivery_id}")
        return await self._record(delivery_id, attempt, DeliveryStatus.DEAD, None, reason, lease)

    async def _record(
        self,
        delivery_id: str,
        attempt: Attempt | None,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        last_error: str | None,
        lease: float | None,
    ) -> bool:
        a = attempt
        updated_at = a.started_at + a.duration_ms / 1000 if a is not None else time.time()
        delivered_at = updated_at if status is DeliveryStatus.DELIVERED else None
        return await self._apply(
            ResultChange(
                delivery_id, a, status, next_attempt_at, last_error, updated_at, delivered_at, lease
            )
        )

    async def _apply(self, change: ResultChange) -> bool:
        """Add the attempt (if any); move the delivery if ``change.holds`` its lease. Returns
        whether it moved."""
        raise NotImplementedError


class Store(Protocol):
    async def open(self, create: bool = True, *, upgrade: bool = False) -> None:
        """Connect. An empty database gets the schema unless ``create`` is false (then it is a
        StoreError); an older schema is a StoreError unless ``upgrade`` (run `relay db upgrade`).
        """

    async def upgrade(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns the (from, to) versions."""

    async def close(self) -> None: ...

    def observe_commits(self, observe: Callable[[str, float, int], None]) -> None:
        """Have ``observe(kind, seconds, writes)`` called after each group commit (kind
        ``ingest``, and ``results`` where attempt results are grouped too)."""

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        """Store the event and its deliveries in ONE durable commit, or report a duplicate.

        Deduplicates on (source, message_id). Raises StoreUnavailableError if it cannot commit.
        """

    async def claim_due(
        self,
        now: float,
        limit: int,
        lease_s: float,
        sinks: Collection[str] | None = None,
        exclude_sinks: Collection[str] | None = None,
        rules: Collection[str] | None = None,
        exclude_rules: Collection[str] | None = None,
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries (pending/failed, next_attempt_at <= now, no live
        lease), oldest due first, optionally only for ``sinks`` / ``rules``, or not for
        ``exclude_sinks`` / ``exclude_rules``.

        A lease expires at now + lease_s."""

    # The worker passes ``lease`` (its claim's ``lease_until``) to the calls below. Then the
    # delivery moves only if that lease is still the delivery's: if it has passed and another
    # claim has taken the delivery (or that claim has finished, or it was replayed since), the
    # attempt is kept in the history and the delivery is left to whoever holds it now. record_*
    # return whether the delivery moved. Without ``lease`` (tests, tools) it always moves.

    async def record_delivered(self, attempt: Attempt, *, lease: float | None = None) -> bool:
        """Record a successful attempt; the delivery becomes delivered and its lease is dropped."""

    async def record_retry(
        self, attempt: Attempt, next_attempt_at: float, *, lease: float | None = None
    ) -> bool:
        """Record a failed attempt; the delivery becomes failed, due again at next_attempt_at."""

    async def record_dead(
        self, attempt: Attempt | None, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> bool:
        """Dead-letter a delivery with a reason (recording the attempt, if one was made)."""

    async def release(self, delivery_ids: Collection[str], *, lease: float | None = None) -> None:
        """Drop leases without recording an attempt (graceful shutdown): due again at once.
        With ``lease``, only the deliveries whose lease it still is."""

    async def release_all_leases(self) -> int:
        """Drop every lease (a single worker starting after a crash). Returns how many."""

    async def defer(
        self, delivery_id: str, next_attempt_at: float, *, lease: float | None = None
    ) -> None:
        """Drop the lease and make the delivery due later, without counting an attempt (a
        replica that does not know the delivery's rule yet leaves it to one that does). With
        ``lease``, only while it is still the delivery's lease."""

    # Reads and operations for the CLI and metrics. They never change what a worker holds, except
    # ``replay``, which only touches deliveries that are not in flight.

    async def get_event(self, id_or_message_id: str) -> EventRecord | None:
        """The event with this relay id or, failing that, this sender message id (svix-id)."""

    async def list_events(
        self, *, type_glob: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """Events newest first, optionally of a type glob (``user.*``) and received >= since."""

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        sink: str | None = None,
        rule: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[DeliveryRecord]:
        """Deliveries newest first (by created_at), filtered by every argument given.

        An unknown ``status`` raises ValueError."""

    async def count_deliveries(self, event_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """For each of ``event_ids`` that has deliveries, how many it has in each status (one
        query for all of them)."""

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        """Every attempt of one delivery, in order (number 1, 2, ...)."""

    async def replay(self, delivery_ids: Collection[str], now: float) -> int:
        """Make failed/dead/delivered deliveries pending and due at ``now``. Returns how many.

        The idempotency key and the attempt history are kept (the next attempt is numbered after
        the last); the retry budget starts again (``attempts`` goes back to 0). Pending ones and
        ones under a live lease are left alone."""

    async def queue_stats(self, now: float) -> QueueStats:
        """How much work is waiting, for metrics and ``relay status``."""

    async def purge(self, older_than: float) -> int:
        """Delete events received before ``older_than`` whose deliveries are all final
        (delivered or dead), with their deliveries and attempts. Returns how many events.

        Events are the deduplication record: a purged message id is accepted again. The caller
        must keep at least 28 hours (Svix retries a message for up to ~28 h)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event."""

    id: str
    source: str
    message_id: str
    type: str
    received_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """The current state of one delivery (see the life cycle at the top of this module)."""

    id: str
    event_id: str
    rule: str
    send_index: int
    sink: str
    idempotency_key: str
    status: DeliveryStatus
    attempts: int  # attempts made so far
    next_attempt_at: float
    lease_until: float | None  # a worker holds it until then
    last_error: str | None  # the latest failure or dead-letter reason; None once delivered
    created_at: float
    updated_at: float
    delivered_at: float | None  # when it was last delivered


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One recorded send attempt; ``outcome`` is the status it moved the delivery to (or would
    have: an attempt that outlived its claim's lease leaves the delivery as it is)."""

    id: int
    delivery_id: str
    number: int  # 1-based within its delivery
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    outcome: DeliveryStatus


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Work waiting at one instant."""

    due: int  # claimable now: pending/failed, next_attempt_at <= now, no live lease
    pending_total: int  # not final (pending or failed): due or not, leased or not
    oldest_due_age_s: float | None  # now - the earliest next_attempt_at among the due ones


def with_status(row: Sequence[Any], index: int) -> list[Any]:
    """A row read from a store, its ``index``-th column (a status text) as a DeliveryStatus:
    what DeliveryRecord and AttemptRecord take."""
    values = list(row)
    values[index] = DeliveryStatus(values[index])
    return values
