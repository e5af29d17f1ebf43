"""What the workflow store tests build: events with the workflow steps ingest would plan for
them, at the tests' clock (``T0`` + seconds). Times are driven, never slept."""

from __future__ import annotations

from relay.store import DeliveryStatus, IngestOutcome, NewDelivery, Store
from relay.store.steps import Batched, Cancel, IngestResult, Limited, StepResult
from tests.store.helpers import T0, event

DAY = 86400.0


def scheduled(
    event_id: str, due: float, *, key: str | None = None, rule: str = "onboarding", i: int = 0
) -> NewDelivery:
    """A delivery of ``rule`` due at ``due`` (scheduled), cancellable by ``key``."""
    return NewDelivery(
        f"dlv_{event_id}_{i}",
        rule,
        i,
        "email",
        f"key_{event_id}_{i}",
        due,
        status=DeliveryStatus.SCHEDULED if due > T0 else DeliveryStatus.PENDING,
        cancel_key=key,
    )


async def created(store: Store, n: int, due: float, key: str, at: float = T0) -> str:
    """Event n (user.created) with one delivery due at ``due``, cancel key ``key``."""
    e = event(n, at=at)
    d = scheduled(e.id, due, key=key)
    assert await store.ingest(e, [d]) is IngestOutcome.ACCEPTED
    return d.id


async def cancel(
    store: Store, n: int, key: str, at: float = T0, rule: str = "onboarding"
) -> StepResult:
    """Event n (user.deleted) cancelling ``rule``'s unsent deliveries with ``key``."""
    e = event(n, type="user.deleted", at=at)
    result = await store.admit(e, [], [Cancel(rule, key, f"cancelled by user.deleted msg_{n}")])
    (step,) = result.steps
    return step


async def limit(store: Store, n: int, key: str | None, at: float, **kw: float | None) -> StepResult:
    e = event(n, at=at)
    d = NewDelivery(f"dlv_{e.id}", "welcome", 0, "email", f"key_{e.id}", at)
    step = Limited("welcome", key, int(kw.get("max") or 1), kw.get("per_s"), (d,), f"held {key}")
    (outcome,) = (await store.admit(e, [], [step])).steps
    return outcome


def entry(
    event_id: str,
    at: float,
    *,
    window_s: float = 600,
    max: int = 50,
    lead: bool = False,
    key: str = "",
    sends: int = 1,
    rule: str = "digest",
) -> Batched:
    """An event's digest entry, as ingest plans it (one member and one digest per send)."""

    def row(i: int, suffix: str, status: DeliveryStatus) -> NewDelivery:
        return NewDelivery(
            f"dlv_{event_id}_{suffix}{i}", rule, i, "slack", f"key_{event_id}_{suffix}{i}", at,
            status=status,
        )  # fmt: skip

    return Batched(
        rule=rule,
        digest_key=key,
        max=max,
        lead=lead,
        batch_id=f"bat_{event_id}",
        closes_at=at + window_s,
        due_full=at,
        members=tuple(row(i, "m", DeliveryStatus.BATCHED) for i in range(sends)),
        digests=tuple(row(i, "d", DeliveryStatus.SCHEDULED) for i in range(sends)),
        leads=tuple(row(i, "l", DeliveryStatus.PENDING) for i in range(sends)) if lead else (),
    )


async def digest(store: Store, n: int, at: float, **kw: object) -> IngestResult:
    """Event n (user.created) joining the digest (``entry``'s keywords)."""
    e = event(n, at=at)
    return await store.admit(e, [], [entry(e.id, at, **kw)])  # type: ignore[arg-type]
