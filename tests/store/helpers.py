"""What the store tests build: records at the tests' clock ``T0``, and the markers that pick a
backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg
import pytest

from relay.store import (
    Attempt,
    DeliveryRecord,
    IngestOutcome,
    NewDelivery,
    NewEvent,
    SQLiteStore,
    Store,
)
from relay.store.migrations import POSTGRES_STEPS, SQLITE_STEPS
from relay.store.postgres_sql import SET_VERSION, VERSION_TABLE

T0 = 1_000_000.0  # the tests' clock: every time is T0 + seconds
BACKENDS = ["sqlite", "postgres"]
sqlite_only = pytest.mark.parametrize("make_store", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("make_store", ["postgres"], indirect=True)


def event(
    n: int = 1, *, source: str = "clerk", type: str = "user.created", at: float = T0
) -> NewEvent:
    return NewEvent(
        id=f"evt_{source}_{n}",
        source=source,
        message_id=f"msg_{n}",
        type=type,
        received_at=at,
        body=b'{"type": "%s", "n": %d}' % (type.encode(), n),
    )


def delivery(
    event_id: str, i: int = 0, *, sink: str = "slack", rule: str = "r", due: float = T0
) -> NewDelivery:
    return NewDelivery(
        id=f"dlv_{event_id}_{i}",
        rule=rule,
        send_index=i,
        sink=sink,
        idempotency_key=f"key_{event_id}_{i}",
        next_attempt_at=due,
    )


def attempt(
    delivery_id: str, at: float = T0, *, code: int | None = 500, error: str | None = "x"
) -> Attempt:
    return Attempt(delivery_id, started_at=at, duration_ms=250.0, status_code=code, error=error)


async def ingest_one(store: Store, n: int = 1) -> str:
    """Ingest event n with one delivery due at T0; returns the delivery id."""
    e = event(n)
    d = delivery(e.id)
    assert await store.ingest(e, [d]) is IngestOutcome.ACCEPTED
    return d.id


async def stored(store: Store, delivery_id: str) -> DeliveryRecord:
    """The delivery ``delivery_id``, which the test has stored."""
    found = await store.get_delivery(delivery_id)
    assert found is not None, f"{delivery_id} is not stored"
    return found


def forbidden(why: str) -> Callable[..., None]:
    def fail(*args: object) -> None:
        raise AssertionError(why)

    return fail


def forbid_fallback(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ``store`` writes a batch one event at a time (its fallback)."""
    import relay.store.sqlite_writes as sqlite_module

    no_fallback = forbidden("the fast path failed and fell back")
    if isinstance(store, SQLiteStore):
        monkeypatch.setattr(sqlite_module, "_ingest_one_by_one", no_fallback)
    else:
        monkeypatch.setattr(store, "_ingest_alone", no_fallback)


def sqlite_at_version(path: Path, version: int, rows: Iterable[str] = ()) -> None:
    """A SQLite file as relay's schema ``version`` left it (its first migration steps), holding
    ``rows`` (SQL statements): what an older relay wrote, for an upgrade test."""
    raw = sqlite3.connect(path)
    for step in SQLITE_STEPS[:version]:
        for statement in step:
            raw.execute(statement)
    for statement in rows:
        raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()


async def postgres_at_version(url: str, version: int, rows: Iterable[str] = ()) -> None:
    """The PostgreSQL schema at ``url`` as relay's schema ``version`` left it, holding ``rows``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for step in POSTGRES_STEPS[:version]:
            for statement in step:
                await conn.execute(statement)
        await conn.execute(VERSION_TABLE)
        await conn.execute(SET_VERSION, [version])
        for statement in rows:
            await conn.execute(statement)
