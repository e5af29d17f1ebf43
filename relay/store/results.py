"""Recording an attempt's result: what it changes (``ResultChange``) and the ``record_*`` methods
both stores share (``RecordsResults``), which build the change and hand it to the store's own
``_apply`` (a group commit: ``relay.store.sqlite_writes.record_batch`` and
``relay.store.postgres._record_all`` write it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from relay.errors import StoreError
from relay.store.base import Attempt, DeliveryStatus, Recorded

# What a delivered result writes to a delivery cancelled while it was being sent: the cancel's
# reason is kept, and says who won.
SENT_ANYWAY = "; it was already being sent: the send went out"


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
    ) -> tuple[dict[str, Any] | None, tuple[Any, ...] | None, Recorded]:
        """What recording this result writes, given what the store read of its delivery under
        the write lock, ``(attempts, last attempt number, lease_until, status, last_error)`` or
        None: the attempt's row (None without an attempt), the delivery's update (None if this
        change no longer holds its lease) and what that does. A delivery that is gone is a
        StoreError.

        A delivery cancelled while this attempt ran stays cancelled, its lease dropped, unless
        the attempt delivered: then it is delivered, the cancel's reason kept in last_error."""
        if found is None:
            raise StoreError(f"{self.describe()}: no such delivery")
        attempts, last_number, lease_until, status, last_error = found
        row = self.attempt_row(last_number) if self.attempt is not None else None
        if not self.holds(lease_until):
            return row, None, Recorded.LEASE_LOST
        if status != DeliveryStatus.CANCELLED:
            return row, self.delivery_update(attempts), Recorded.MOVED
        if self.status is DeliveryStatus.DELIVERED:  # the send won; the cancel's reason kept
            won = replace(self, last_error=(last_error or "cancelled") + SENT_ANYWAY)
            return row, won.delivery_update(attempts), Recorded.CANCELLED
        lost = replace(  # the cancel won: cancelled as it was, with nothing due
            self, status=DeliveryStatus.CANCELLED, next_attempt_at=None, last_error=last_error,
            delivered_at=None,
        )  # fmt: skip
        return row, lost.delivery_update(attempts), Recorded.CANCELLED

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

    async def record_delivered(self, attempt: Attempt, *, lease: float | None = None) -> Recorded:
        status = DeliveryStatus.DELIVERED
        return await self._record(attempt.delivery_id, attempt, status, None, None, lease)

    async def record_retry(
        self, attempt: Attempt, next_attempt_at: float, *, lease: float | None = None
    ) -> Recorded:
        status, error = DeliveryStatus.FAILED, attempt.error
        return await self._record(
            attempt.delivery_id, attempt, status, next_attempt_at, error, lease
        )

    async def record_dead(
        self, attempt: Attempt | None, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> Recorded:
        if attempt is not None and attempt.delivery_id != delivery_id:
            raise ValueError(f"attempt is for {attempt.delivery_id}, not {delivery_id}")
        return await self._record(delivery_id, attempt, DeliveryStatus.DEAD, None, reason, lease)

    async def record_suppressed(
        self, delivery_id: str, reason: str, *, lease: float | None = None
    ) -> Recorded:
        status = DeliveryStatus.SUPPRESSED
        return await self._record(delivery_id, None, status, None, reason, lease)

    async def _record(
        self,
        delivery_id: str,
        attempt: Attempt | None,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        last_error: str | None,
        lease: float | None,
    ) -> Recorded:
        a = attempt
        updated_at = a.started_at + a.duration_ms / 1000 if a is not None else time.time()
        delivered_at = updated_at if status is DeliveryStatus.DELIVERED else None
        return await self._apply(
            ResultChange(
                delivery_id, a, status, next_attempt_at, last_error, updated_at, delivered_at, lease
            )
        )

    async def _apply(self, change: ResultChange) -> Recorded:
        """Add the attempt (if any); move the delivery if ``change.holds`` its lease. Returns
        what it did."""
        raise NotImplementedError
