"""The store's records and its contract, narrow by caller: the ``Queue`` that ingest and the
worker use, and the ``DeliveryLog`` that the CLI and ``/metrics`` read; a ``Store`` is both.
Backends implement it (``relay.store.sqlite``, ``relay.store.postgres``).

Times are Unix seconds (floats) passed in by the caller, so tests drive the clock.

Life of a delivery::

    pending ──claim──▶ (leased) ──send ok──────────▶ delivered
       ▲                  │ ──retryable error─────▶ failed (next_attempt_at set; claimable when due)
       │                  │ ──permanent / exhausted▶ dead   (reason kept)
       └── replay ◀───────┘ (dead/failed/delivered → pending, same idempotency key)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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


class Lifecycle(Protocol):
    """Opening and closing a store; every caller does this."""

    async def open(self, create: bool = True, *, upgrade: bool = False) -> None:
        """Connect. An empty database gets the schema unless ``create`` is false (then it is a
        StoreError); an older schema is a StoreError unless ``upgrade`` (run `relay db upgrade`).
        """

    async def close(self) -> None: ...


class Queue(Lifecycle, Protocol):
    """What ingest and the worker use: store events with their deliveries, claim the due ones,
    record each attempt's result.

    The worker passes ``lease`` (its claim's ``lease_until``) to the calls that change a claimed
    delivery. Then the delivery moves only if that lease is still the delivery's: if it has passed
    and another claim has taken the delivery (or that claim has finished, or it was replayed
    since), the attempt is kept in the history and the delivery is left to whoever holds it now.
    ``record_*`` return whether the delivery moved. Without ``lease`` (tests, tools) it always
    moves.
    """

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
        sink: str | None = None,
        rules: Collection[str] | None = None,
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries (pending/failed, next_attempt_at <= now, no live
        lease), oldest due first: of one ``sink`` (any when None), of the ``rules`` given (any
        when None). A lease expires at now + lease_s."""

    async def claim_orphans(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str], rules: Collection[str]
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries whose sink is not one of ``sinks`` or whose rule
        is not one of ``rules``: the work of a removed sink or rule (or, during a rolling deploy,
        of one only newer replicas know)."""

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

    async def probe(self) -> None:
        """Raise StoreError (StoreUnavailableError if it may pass) if the store could not take a
        commit now, as far as a cheap check that writes nothing can tell, off ingest's path:
        ``/readyz`` asks when ingest's last commit failed and no commit has happened since."""


class DeliveryLog(Lifecycle, Protocol):
    """What the CLI and ``/metrics`` read (and ``replay`` writes). None of it changes what a worker
    holds: ``replay`` only touches deliveries that are not in flight."""

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
        """How much work is waiting, for metrics and ``/readyz``."""

    async def purge(self, older_than: float) -> int:
        """Delete events received before ``older_than`` whose deliveries are all final
        (delivered or dead), with their deliveries and attempts. Returns how many events.

        Events are the deduplication record: a purged message id is accepted again. The caller
        must keep at least 28 hours (Svix retries a message for up to ~28 h)."""


class Store(Queue, DeliveryLog, Protocol):
    """A whole store, as ``open_store`` makes one: both roles, and its schema."""

    async def upgrade(self) -> tuple[int, int]:
        """Create or upgrade the schema; returns the (from, to) versions."""


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

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeliveryRecord:
        """From a stored row: its columns in field order, the status as text."""
        values = list(row)
        values[6] = DeliveryStatus(values[6])
        return cls(*values)


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

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AttemptRecord:
        """From a stored row: its columns in field order, the outcome as text."""
        values = list(row)
        values[7] = DeliveryStatus(values[7])
        return cls(*values)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Work waiting at one instant."""

    due: int  # claimable now: pending/failed, next_attempt_at <= now, no live lease
    pending_total: int  # not final (pending or failed): due or not, leased or not
    oldest_due_age_s: float | None  # now - the earliest next_attempt_at among the due ones
