"""The backlog the delivery and memory benches drain, written in bulk into relay's own schema.

``backlog_rows`` are exactly the rows the stores' ingest writes for an accepted user.created
event with one delivery; ``fill_backlog`` inserts them into a SQLite file in one transaction,
in the schema ``create_schema`` makes through relay's SQLiteStore (``Database.fill_backlog``
does the same for PostgreSQL, by COPY). Bulk insertion just skips the fsyncs per event.
``count_rows`` reads a SQLite file while relay writes it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from _fixtures import user_created_bodies

EVENT_COLUMNS = "id, source, message_id, type, received_at, body"
DELIVERY_COLUMNS = (
    "id, event_id, rule, send_index, sink, idempotency_key, status, next_attempt_at,"
    " created_at, updated_at"
)
_INSERT_EVENTS = (
    "INSERT INTO events (id, source, message_id, type, received_at, body) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
    " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def create_schema(db: Path) -> None:
    """Create the store's own schema by opening (and closing) a relay SQLiteStore."""
    from relay.store import SQLiteStore

    async def run() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    asyncio.run(run())


def backlog_rows(
    n: int, *, rule: str = "bench", sink: str = "hook", start: int = 0
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(events, deliveries) rows of a backlog of ``n`` user.created events, each with one
    pending delivery due now: the columns ``*_COLUMNS`` name, as the stores' ingest writes them
    (``status`` is 'pending', ``attempts`` 0 by default). ``start`` numbers them from there, so
    a backlog made in chunks has no id twice."""
    from relay.ids import idempotency_key

    now = time.time()
    ms = int(now * 1000)
    events: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    for i, body in enumerate(user_created_bodies(n, f"bk{start}"), start=start):
        event_id = f"evt_{ms:012x}{i:010x}"
        message_id = f"msg_backlog_{i:08d}"
        events.append((event_id, "clerk", message_id, "user.created", now, body))
        key = idempotency_key("clerk", message_id, rule, 0)
        deliveries.append(
            (f"dlv_{ms:012x}{i:010x}", event_id, rule, 0, sink, key, "pending", now, now, now)
        )
    return events, deliveries


def fill_backlog(db: Path, n: int, *, rule: str = "bench", sink: str = "hook") -> float:
    """Insert ``n`` events, each with one pending delivery due now, in bulk (one transaction),
    into the store's own schema (created first through SQLiteStore). Returns the seconds taken.

    The rows are exactly what ``SQLiteStore.ingest`` writes for an accepted event with one
    delivery; bulk insertion just skips 2 fsyncs per event."""
    create_schema(db)
    t0 = time.perf_counter()
    events, deliveries = backlog_rows(n, rule=rule, sink=sink)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_EVENTS, events)
        conn.executemany(_INSERT_DELIVERIES, deliveries)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0


def count_rows(db: Path, sql: str) -> int:
    """One COUNT query on a read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        (value,) = conn.execute(sql).fetchone()
        return int(value or 0)
    finally:
        conn.close()
