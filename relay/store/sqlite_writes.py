"""The SQLite store's batched writes: what one transaction on the store's thread does.

Ingests and attempt results arrive in batches (``relay.store.group``). A batch is one
``BEGIN IMMEDIATE`` ... ``COMMIT``: ingests as a few multi-row statements (one per table for
up to 64 events), falling back to one savepoint per item when the fast path fails on an item of
its own; results one savepoint each. A batch holding an ingest with workflow steps is written
one item per savepoint, in the order they arrived, each by ``relay.store.admit.write``. Functions
here take the connection and never touch the thread or the event loop; ``relay.store.sqlite``
runs them.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from relay.errors import StoreError, StoreUnavailableError
from relay.store import admit
from relay.store.base import NewEvent, Recorded
from relay.store.group import PendingIngest, Write
from relay.store.results import ResultChange
from relay.store.steps import ACCEPTED, DUPLICATE, IngestResult

T = TypeVar("T")
Writes = TypeVar("Writes", bound=Write)

# Primary result codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_UNAVAILABLE_CODES = frozenset({5, 6, 8, 10, 13, 14, 15})


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    """``exc`` as a StoreError saying ``what`` failed; unavailable if writing may work later."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and ((code or 0) & 0xFF) in _UNAVAILABLE_CODES:
        return StoreUnavailableError(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction; on an exception the caller (``SQLiteStore._call``) rolls back."""
    conn.execute("BEGIN IMMEDIATE")
    yield
    conn.execute("COMMIT")


# The delivery's attempts in its current retry budget (reset by a replay), the number of the
# last attempt recorded for it ever (attempt numbers keep counting across replays), its lease,
# its status and its last error (a cancel's reason, kept by a result after the cancel).
_ATTEMPT_COUNTS = (
    "SELECT d.attempts, COALESCE((SELECT MAX(a.number) FROM attempts a"
    " WHERE a.delivery_id = d.id), 0), d.lease_until, d.status, d.last_error"
    " FROM deliveries d WHERE d.id = ?"
)


def ingest_batch(
    conn: sqlite3.Connection, batch: Sequence[PendingIngest]
) -> list[IngestResult | StoreError]:
    """Insert the batch's new events and their deliveries, then commit them all at once.

    The fast path writes the whole batch with a few multi-row statements. If that fails for a
    reason other than "the database cannot write" (which fails the whole batch), or an ingest
    has workflow steps, the batch is written one event per savepoint, so an event that fails on
    its own (a constraint) touches only itself."""
    if any(item.steps for item in batch):
        return _ingest_one_by_one(conn, batch)
    try:
        with transaction(conn):
            return list(_insert_all(conn, batch))
    except sqlite3.Error as exc:
        if isinstance(translate(exc, "ingest"), StoreUnavailableError):
            raise
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return _ingest_one_by_one(conn, batch)


def _insert_all(conn: sqlite3.Connection, batch: Sequence[PendingIngest]) -> list[IngestResult]:
    """Inside a write transaction (no other writer): duplicates are the keys already stored
    (one read per chunk of the batch) or seen earlier in the batch."""
    stored = _stored_keys(conn, [item.event for item in batch])
    outcomes: list[IngestResult] = []
    events: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    for item in batch:
        event = item.event
        key = (event.source, event.message_id)
        if key in stored:
            outcomes.append(DUPLICATE)
            continue
        stored.add(key)
        events.append(admit.event_row(event))
        deliveries.extend(admit.delivery_row(event, d) for d in item.deliveries)
        outcomes.append(ACCEPTED)
    for rows, statement in ((events, _INSERT_EVENTS), (deliveries, _INSERT_DELIVERIES)):
        for chunk in _chunks(rows):
            conn.execute(statement(len(chunk)), [value for row in chunk for value in row])
    return outcomes


def _stored_keys(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> set[tuple[str, str]]:
    """The (source, message id) keys of ``events`` already stored, read through the unique
    index on (source, message_id): one read per source and chunk."""
    by_source: dict[str, list[str]] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event.message_id)
    found: set[tuple[str, str]] = set()
    for source, message_ids in by_source.items():
        for chunk in _chunks(message_ids):
            rows = conn.execute(_STORED_KEYS(len(chunk)), [source, *chunk]).fetchall()
            found.update((source, message_id) for (message_id,) in rows)
    return found


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in chunks of at most 64, so a batch of up to 64 is one statement per table.
    Each statement is a hand-over of the GIL between the store's thread and the event loop and
    back, which costs the loop more than the statement costs SQLite (bench/RESULTS.md); the
    texts for every size up to 64 stay prepared in the connection's cache (``STATEMENTS``)."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _multirow(head: str, row: str, tail: str = "") -> Callable[[int], str]:
    """The statement for ``rows`` rows: ``head row, row, ... tail``."""

    @functools.cache
    def statement(rows: int) -> str:
        return f"{head} {', '.join([row] * rows)}{tail}"

    return statement


_CHUNK = 64
# Prepared statements a connection keeps: the multi-row texts (_CHUNK sizes for each of
# _INSERT_EVENTS, _INSERT_DELIVERIES, _STORED_KEYS) and every other statement of the store.
STATEMENTS = 3 * _CHUNK + 64
_INSERT_EVENTS = _multirow(
    "INSERT INTO events (id, source, message_id, type, received_at, body) VALUES",
    "(?, ?, ?, ?, ?, ?)",
)
_INSERT_DELIVERIES = _multirow(
    f"INSERT INTO deliveries ({admit.DELIVERY_COLUMNS}) VALUES", admit.DELIVERY_VALUES
)
_STORED_KEYS = _multirow(
    "SELECT message_id FROM events WHERE source = ? AND message_id IN (", "?", ")"
)


def _ingest_one_by_one(
    conn: sqlite3.Connection, batch: Sequence[PendingIngest]
) -> list[IngestResult | StoreError]:
    """The slow path: each event under its own savepoint, written with its workflow steps by
    ``relay.store.admit``; one that fails gets its error."""
    with transaction(conn):
        return _each_alone(conn, batch, lambda c, item: drive(c, admit.write(item, admit.SQLITE)))


def drive(conn: sqlite3.Connection, writer: admit.Writer) -> IngestResult:
    """Run ``writer`` (``relay.store.admit``) on the connection, in the caller's transaction."""
    try:
        statement = next(writer)
        while True:
            text, params, many = statement
            if many:
                conn.executemany(text, params)
                rows: list[Any] = []
            else:
                rows = conn.execute(text, params).fetchall()
            statement = writer.send(rows)
    except StopIteration as done:
        result: IngestResult = done.value
        return result


def _each_alone(
    conn: sqlite3.Connection,
    batch: Sequence[Writes],
    write: Callable[[sqlite3.Connection, Writes], T],
) -> list[T | StoreError]:
    """``write`` each item under its own savepoint, inside the caller's transaction: an item
    that fails on its own (a constraint, a delivery that is gone) is rolled back and gets its
    error, the others stay written. An error meaning the database cannot write now fails the
    whole transaction."""
    outcomes: list[T | StoreError] = []
    for item in batch:
        conn.execute("SAVEPOINT item")
        try:
            outcomes.append(write(conn, item))
        except (StoreError, sqlite3.Error) as exc:
            error = exc if isinstance(exc, StoreError) else translate(exc, item.describe())
            if isinstance(error, StoreUnavailableError):
                raise
            conn.execute("ROLLBACK TO item")
            outcomes.append(error)
        conn.execute("RELEASE item")
    return outcomes


def record_batch(
    conn: sqlite3.Connection, batch: Sequence[ResultChange]
) -> list[Recorded | StoreError]:
    """Record the results in one transaction, each alone (``_each_alone``)."""
    with transaction(conn):
        return _each_alone(conn, batch, _record)


def _record(conn: sqlite3.Connection, change: ResultChange) -> Recorded:
    """Add the attempt (if there was one) and move the delivery to its new state, if the change
    still holds the delivery's lease (``ResultChange.writes``). Returns what it did."""
    found = conn.execute(_ATTEMPT_COUNTS, (change.delivery_id,)).fetchone()
    row, update, recorded = change.writes(found)
    if row is not None:
        conn.execute(
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code,"
            " error, outcome, rendered) VALUES (:delivery_id, :number, :started_at,"
            " :duration_ms, :status_code, :error, :outcome, :rendered)",
            row,
        )
    if update is not None:
        conn.execute(
            "UPDATE deliveries SET status = ?, attempts = ?, lease_until = NULL,"
            " next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?,"
            " updated_at = ?, delivered_at = COALESCE(?, delivered_at) WHERE id = ?",
            update,
        )
    return recorded
