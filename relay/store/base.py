"""The store's records and its contract, narrow by caller: the ``Queue`` that ingest and the
worker use, and the ``DeliveryLog`` that the CLI and ``/metrics`` read; a ``Store`` is both.
Backends implement it (``relay.store.sqlite``, ``relay.store.postgres``).

Times are Unix seconds (floats) passed in by the caller, so tests drive the clock.

Life of a delivery::

    scheduled ──due (promote_due)──▶ pending ──claim──▶ (leased) ──send ok───────────▶ delivered
        ▲                              ▲                   │ ──retryable error─────▶ failed
        └── outside its send window ───┼───────────────────┘    (claimable again when due)
                                       │                   │ ──permanent / exhausted▶ dead
                                       └── replay ◀────────┘ (dead/failed/delivered → pending)

    made final at ingest, never attempted:  cancelled (a later event cancelled it: scheduled,
    pending or failed), suppressed (held back by a rule's once/throttle, or a recipient's
    suppression), batched (an event's place in a digest; the digest is a delivery of its own).
    cancelled and suppressed ones are replayed only when asked for by name (``replay(also=...)``).

A delivery cancelled while a worker holds it stays cancelled unless that attempt delivers: a
success is recorded (delivered, the cancel's reason kept in ``last_error``), a failure is
recorded in its history and never retried (``Recorded.CANCELLED``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from relay.recipients.addresses import Suppression, SuppressionList

if TYPE_CHECKING:
    from relay.store.steps import IngestResult, Step


class IngestOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not tried yet, due (claimable at next_attempt_at)
    FAILED = "failed"  # tried, failed, will be retried at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # permanent error or attempts exhausted; replayable
    SCHEDULED = "scheduled"  # due later (a delay, a send window, a digest): pending once due
    CANCELLED = "cancelled"  # a later event cancelled it before it was sent; last_error says which
    SUPPRESSED = "suppressed"  # held back (once, throttle, a suppressed recipient); last_error: why
    BATCHED = "batched"  # an event's place in a digest (batch_id); the digest delivery sends it


# Not yet sent: what a cancel moves to cancelled (a claim of a pending/failed one may be under way).
UNSENT = (DeliveryStatus.SCHEDULED, DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# What ``replay`` makes pending again unless asked for more (``also``), and what it may be asked.
REPLAYABLE = (DeliveryStatus.FAILED, DeliveryStatus.DEAD, DeliveryStatus.DELIVERED)
REPLAYABLE_ON_REQUEST = (DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED)


class Recorded(enum.Enum):
    """What recording an attempt's result did to its delivery."""

    MOVED = "moved"  # the delivery moved as the result says
    LEASE_LOST = "lease_lost"  # the claim's lease had passed: kept in the history only
    # The delivery was cancelled while the attempt ran: a success moved it to delivered (the
    # cancel's reason kept), a failure left it cancelled (recorded in its history, not retried).
    CANCELLED = "cancelled"


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
    status: DeliveryStatus = DeliveryStatus.PENDING  # or scheduled, suppressed, batched
    cancel_key: str | None = None  # what a cancelling event must match (its rule's ``key``)
    batch_id: str | None = None  # the digest batch it is a member (or the digest) of
    reason: str | None = None  # why it is suppressed (stored as last_error)


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
    batch_id: str | None = None  # a digest's batch: its events are ``digest_events(batch_id, ...)``


@dataclass(frozen=True, slots=True)
class Attempt:
    """The record of one send attempt. ``error`` must already be redacted."""

    delivery_id: str
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    rendered: str | None = None  # the message it sent, as stored (``relay.delivery.snapshot``)


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
        An event with workflow steps goes through ``admit``.
        """

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        """``ingest``, saying what each workflow step did (``relay.store.steps``): in the one
        commit that stores the event, its cancels move the deliveries they match to cancelled,
        its limits (once, throttle) store their deliveries or suppress them, and its digest
        entries open or join their (rule, key)'s batch."""

    async def promote_due(self, now: float, limit: int = 1000) -> int:
        """Make up to ``limit`` scheduled deliveries due by ``now`` pending (claimable), the
        earliest first; returns how many. The scan stops at the first one not yet due."""

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
        when None). A lease expires at now + lease_s. Claiming a digest closes its batch: no
        event joins it after that."""

    async def digest_events(self, batch_id: str, send_index: int) -> list[bytes]:
        """The bodies of the events in a digest's batch, in the order they were received."""

    async def claim_orphans(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str], rules: Collection[str]
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries whose sink is not one of ``sinks`` or whose rule
        is not one of ``rules``: the work of a removed sink or rule (or, during a rolling deploy,
        of one only newer replicas know)."""

    async def record_delivered(self, attempt: Attempt, *, lease: float | None = None) -> Recorded:
        """Record a successful attempt; the delivery becomes delivered and its lease is dropped."""

    async def record_retry(
        self, attempt: Attempt, next_attempt_at: float, *, lease: float | None = None
    ) -> Recorded:
        """Record a failed attempt; the delivery becomes failed, due again at next_attempt_at."""

    async def record_dead(
        self, attempt: Attempt | None, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> Recorded:
        """Dead-letter a delivery with a reason (recording the attempt, if one was made)."""

    async def record_suppressed(
        self, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> Recorded:
        """Hold a claimed delivery back without an attempt (a suppressed recipient, say): it
        becomes suppressed with the reason, final unless replayed by name."""

    async def release(self, delivery_ids: Collection[str], *, lease: float | None = None) -> None:
        """Drop leases without recording an attempt (graceful shutdown): due again at once.
        With ``lease``, only the deliveries whose lease it still is."""

    async def release_all_leases(self) -> int:
        """Drop every lease (a single worker starting after a crash). Returns how many."""

    async def defer(
        self,
        delivery_id: str,
        next_attempt_at: float,
        *,
        lease: float | None = None,
        scheduled: bool = False,
    ) -> None:
        """Drop the lease and make the delivery due later, without counting an attempt (a
        replica that does not know the delivery's rule yet leaves it to one that does). With
        ``lease``, only while it is still the delivery's lease. ``scheduled``: a pending or
        failed delivery becomes scheduled (it came due outside its send window)."""

    async def suppressions_for(
        self, addresses: Collection[str], scopes: Collection[str]
    ) -> list[Suppression]:
        """The suppressions of any of ``addresses`` in any of ``scopes`` (``SuppressionList``):
        what the worker asks before it sends an email."""

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
        batch_id: str | None = None,
    ) -> list[DeliveryRecord]:
        """Deliveries newest first (by created_at), filtered by every argument given.

        An unknown ``status`` raises ValueError."""

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        """The delivery with this id."""

    async def count_deliveries(self, event_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """For each of ``event_ids`` that has deliveries, how many it has in each status (one
        query for all of them)."""

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        """Every attempt of one delivery, in order (number 1, 2, ...)."""

    async def replay(
        self,
        delivery_ids: Collection[str],
        now: float,
        *,
        also: Collection[DeliveryStatus] = (),
    ) -> int:
        """Make failed/dead/delivered deliveries (and those in ``also``: cancelled, suppressed)
        pending and due at ``now``. Returns how many.

        The idempotency key and the attempt history are kept (the next attempt is numbered after
        the last); the retry budget starts again (``attempts`` goes back to 0). Pending ones and
        ones under a live lease are left alone. ``also`` beyond REPLAYABLE_ON_REQUEST is a
        ValueError."""

    async def queue_stats(self, now: float) -> QueueStats:
        """How much work is waiting, for metrics and ``/readyz``."""

    async def purge(self, older_than: float, *, limit: int = 1000) -> Purged:
        """Delete up to ``limit`` events received before ``older_than`` (oldest first) whose
        deliveries are all final (``FINAL_STATUSES``, or batched in a digest that is itself
        final: the digest reads its events' bodies when it is sent), with their deliveries and
        attempts, and the digest batches left empty, in one short transaction; returns how many
        rows of each went. Pending work is never touched: an event with a delivery in any other
        status stays, and a replay that races the purge either wins (the event stays) or finds
        the delivery gone.

        Events are the deduplication record: a purged message id is accepted again. The caller
        must keep at least 28 hours (Svix retries a message for up to ~28 h); call again while
        a batch comes back full (``relay.delivery.retention`` does, yielding in between)."""


class Store(Queue, DeliveryLog, SuppressionList, Protocol):
    """A whole store, as ``open_store`` makes one: both roles, the suppression list
    (``relay.recipients.addresses``), and its schema."""

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
    # Why it is where it is: the latest failure, or why it was dead-lettered, cancelled or
    # suppressed; None once delivered (unless a cancel came while it was being sent).
    last_error: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None  # when it was last delivered
    cancel_key: str | None = None  # what a cancelling event of its rule must match
    batch_id: str | None = None  # its digest batch (a member's, or the digest's own)

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
    rendered: str | None = None  # the message it sent (JSON), if it got as far as rendering one

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AttemptRecord:
        """From a stored row: its columns in field order, the outcome as text."""
        values = list(row)
        values[7] = DeliveryStatus(values[7])
        return cls(*values)


FINAL_STATUSES = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.DEAD,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.SUPPRESSED,
)
"""The statuses of history that retention purges: an event goes once all its deliveries are in
one of them (or ``batched`` in a digest whose own delivery is)."""


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge deleted: events, and their deliveries and attempts."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.attempts + other.attempts,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Work waiting at one instant."""

    due: int  # claimable now: pending/failed, next_attempt_at <= now, no live lease
    pending_total: int  # not final (pending or failed): due or not, leased or not
    oldest_due_age_s: float | None  # now - the earliest next_attempt_at among the due ones
