"""Writing one ingest with its workflow steps (``relay.store.steps``), the same on every backend.

``write(item, sql)`` is the whole transaction as a generator, free of I/O: it yields each
statement (``Statement``: the SQL, its parameters, and whether they are many rows) and is sent
back the rows the statement returned; it returns the ``IngestResult``. A backend drives it inside
a transaction of its own (``drive`` here for SQLite's connection; ``PostgresStore`` drives it
with its async cursor), so the decisions are made once, for both, between the statements.

The order inside the transaction: the event (a duplicate ends it: nothing else is written), its
cancels (before its own deliveries, which they must never cancel), its unconditional deliveries,
then its limits and digest entries in rule order. On PostgreSQL the rows a step changes are
locked in one order everywhere (deliveries by id; a limit's or a batch's single row), so two
replicas' transactions wait for each other instead of deadlocking; the statements that read
before they write lock what they read (``FOR UPDATE``). On SQLite the transaction holds the
database's write lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from relay.errors import StoreError
from relay.store.base import DeliveryStatus, IngestOutcome, NewDelivery, NewEvent
from relay.store.group import PendingIngest
from relay.store.queries import UNSENT
from relay.store.steps import (
    ACCEPTED,
    DUPLICATE,
    Batched,
    Cancel,
    IngestResult,
    Limited,
    Step,
    StepResult,
)

Statement = tuple[str, Sequence[Any], bool]  # SQL, parameters (rows when many), many
Writer = Generator[Statement, list[Any], IngestResult]

DELIVERY_COLUMNS = (
    "id, event_id, rule, send_index, sink, idempotency_key, status, next_attempt_at,"
    " created_at, updated_at, cancel_key, batch_id, last_error"
)
DELIVERY_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class Dialect:
    """The statements ``write`` yields, for one backend: SQLite's as written (``?``), or
    PostgreSQL's (``%s``, with the row locks SQLite's single writer does not need)."""

    insert_event: str
    insert_delivery: str
    lock_unsent: str
    cancel: str
    limit_row: str
    limit_read: str
    limit_write: str
    batch_expire: str
    batch_join: str
    batch_open: str
    batch_due: str

    @classmethod
    def make(cls, *, postgres: bool) -> Dialect:
        lock = " FOR UPDATE" if postgres else ""
        skip = " FOR UPDATE SKIP LOCKED" if postgres else ""
        statements = cls(
            insert_event="INSERT INTO events (id, source, message_id, type, received_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, message_id) DO NOTHING RETURNING id",
            insert_delivery=f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608
            f" VALUES {DELIVERY_VALUES}",
            lock_unsent="SELECT id FROM deliveries"  # noqa: S608 (constants only)
            f" WHERE rule = ? AND cancel_key = ? AND status IN ({UNSENT}) ORDER BY id{lock}",
            cancel="UPDATE deliveries"  # noqa: S608 (constants only)
            " SET status = 'cancelled', last_error = ?, updated_at = ?"
            f" WHERE rule = ? AND cancel_key = ? AND status IN ({UNSENT})"
            " RETURNING id, sink, lease_until",
            limit_row="INSERT INTO rule_limits (rule, limit_key, sent_at) VALUES (?, ?, '')"
            " ON CONFLICT (rule, limit_key) DO NOTHING",
            limit_read="SELECT sent_at FROM rule_limits"  # noqa: S608 (constants only)
            f" WHERE rule = ? AND limit_key = ?{lock}",
            limit_write="UPDATE rule_limits SET sent_at = ? WHERE rule = ? AND limit_key = ?",
            batch_expire="UPDATE batches SET state = 'closed'"
            " WHERE rule = ? AND digest_key = ? AND state = 'open' AND closes_at <= ?",
            batch_join="UPDATE batches SET members = members + 1,"
            " state = CASE WHEN members + 1 >= max_members THEN 'closed' ELSE 'open' END"
            " WHERE rule = ? AND digest_key = ? AND state = 'open'"
            " RETURNING id, members, state, closes_at",
            batch_open="INSERT INTO batches (id, rule, digest_key, state, opened_at, closes_at,"
            " members, max_members) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (rule, digest_key) WHERE state = 'open' DO NOTHING RETURNING id",
            # A digest delivery a worker is claiming right now is due anyway: skip it, no wait.
            batch_due="UPDATE deliveries"  # noqa: S608 (constants only)
            " SET next_attempt_at = ?, updated_at = ? WHERE id IN (SELECT id FROM deliveries"
            f" WHERE batch_id = ? AND status = 'scheduled'{skip})",
        )
        if not postgres:
            return statements
        return cls(**{k: v.replace("?", "%s") for k, v in dataclasses.asdict(statements).items()})


SQLITE = Dialect.make(postgres=False)
POSTGRES = Dialect.make(postgres=True)


def event_row(event: NewEvent) -> tuple[Any, ...]:
    return (event.id, event.source, event.message_id, event.type, event.received_at, event.body)


def delivery_row(event: NewEvent, d: NewDelivery) -> tuple[Any, ...]:
    """A delivery's values in ``DELIVERY_COLUMNS`` order; created when its event was received."""
    now = event.received_at
    return (d.id, event.id, d.rule, d.send_index, d.sink, d.idempotency_key, d.status.value,
            d.next_attempt_at, now, now, d.cancel_key, d.batch_id, d.reason)  # fmt: skip


def write(item: PendingIngest, sql: Dialect) -> Writer:
    """The transaction of one ingest with steps; see the module's docstring."""
    event, now = item.event, item.event.received_at
    if not (yield sql.insert_event, event_row(event), False):
        return DUPLICATE
    results: list[StepResult] = []
    for step in item.steps:
        if isinstance(step, Cancel):
            results.append((yield from _cancel(step, now, sql)))
    yield from _insert(event, item.deliveries, sql)
    for step in item.steps:
        if isinstance(step, Limited):
            results.append((yield from _limit(event, step, sql)))
        elif isinstance(step, Batched):
            results.append((yield from _join(event, step, sql)))
    return IngestResult(ACCEPTED.outcome, tuple(results)) if results else ACCEPTED


def _insert(
    event: NewEvent, deliveries: Sequence[NewDelivery], sql: Dialect
) -> Generator[Statement, list[Any], None]:
    if deliveries:
        yield sql.insert_delivery, [delivery_row(event, d) for d in deliveries], True


def _cancel(step: Cancel, now: float, sql: Dialect) -> Generator[Statement, list[Any], StepResult]:
    yield sql.lock_unsent, (step.rule, step.cancel_key), False
    rows = yield sql.cancel, (step.reason, now, step.rule, step.cancel_key), False
    busy = {i for i, _, lease in rows if lease is not None and lease > now}
    cancelled = tuple(sorted((i, sink) for i, sink, _ in rows if i not in busy))
    return StepResult(step.rule, "cancelled", cancelled=cancelled, in_flight=tuple(sorted(busy)))


def _limit(
    event: NewEvent, step: Limited, sql: Dialect
) -> Generator[Statement, list[Any], StepResult]:
    now = event.received_at
    if step.limit_key is not None:
        key = (step.rule, step.limit_key)
        yield sql.limit_row, key, False
        ((text,),) = yield sql.limit_read, key, False
        taken = [float(t) for t in text.split()]
        if step.per_s is not None:
            taken = [t for t in taken if t > now - step.per_s]
        if len(taken) < step.max:
            taken.append(now)
            yield sql.limit_write, (" ".join(repr(t) for t in taken), *key), False
            yield from _insert(event, step.deliveries, sql)
            return StepResult(step.rule, "sent")
    held = [
        dataclasses.replace(d, status=DeliveryStatus.SUPPRESSED, reason=step.reason)
        for d in step.deliveries
    ]
    yield from _insert(event, held, sql)
    return StepResult(step.rule, "suppressed")


def _join(
    event: NewEvent, step: Batched, sql: Dialect
) -> Generator[Statement, list[Any], StepResult]:
    """Join the open batch of (rule, key), or open one; see the module's docstring."""
    now, key = event.received_at, (step.rule, step.digest_key)
    yield sql.batch_expire, (*key, now), False
    for _ in range(3):  # join; else open; else another replica opened one meanwhile: join it
        rows = yield sql.batch_join, key, False
        if rows:
            batch_id, members, state, closes_at = rows[0]
            full = state == "closed"
            yield from _insert(event, _in_batch(step.members, batch_id), sql)
            if step.lead and members == 1:  # the first event after the lead makes the digest
                due = step.due_full if full else closes_at
                yield from _insert(event, _in_batch(step.digests, batch_id, due), sql)
            elif full:
                yield sql.batch_due, (step.due_full, now, batch_id), False
            return StepResult(step.rule, "full" if full else "joined", batch_id)
        members = 0 if step.lead else 1
        full = members >= step.max
        state = "closed" if full else "open"
        opening = (step.batch_id, *key, state, now, step.closes_at, members, step.max)
        if (yield sql.batch_open, opening, False):
            if step.lead:
                yield from _insert(event, step.leads, sql)
                return StepResult(step.rule, "lead", step.batch_id)
            due = step.due_full if full else step.closes_at
            yield from _insert(event, _in_batch(step.members, step.batch_id), sql)
            yield from _insert(event, _in_batch(step.digests, step.batch_id, due), sql)
            return StepResult(step.rule, "full" if full else "opened", step.batch_id)
    raise StoreError(f"digest of rule {step.rule}: could neither join nor open a batch")


def _in_batch(
    deliveries: Sequence[NewDelivery], batch_id: str, due: float | None = None
) -> list[NewDelivery]:
    return [
        dataclasses.replace(
            d, batch_id=batch_id, next_attempt_at=d.next_attempt_at if due is None else due
        )
        for d in deliveries
    ]


class Admits:
    """``ingest`` for a store that implements ``admit``: the same, without the steps' results."""

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        return (await self.admit(event, deliveries)).outcome

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        raise NotImplementedError
