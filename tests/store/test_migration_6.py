"""Schema step 6 (the suppression list), on both backends: a version-5 database with work in it
is refused until upgraded, then keeps every row and has the suppressions table, its key and its
listing index, and nothing in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from relay.errors import StoreError
from relay.recipients.addresses import Reason, Suppression
from relay.store import SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.store.helpers import postgres_at_version, sqlite_at_version

pytestmark = pytest.mark.anyio

# A version-5 store with work in it: a pending delivery and a failed one with its attempt.
ROWS = (
    "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1.0, {body})",
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
    " attempts, next_attempt_at, last_error, created_at, updated_at) VALUES"
    " ('dlv_p', 'evt_1', 'r', 0, 'email', 'kp', 'pending', 0, 1.0, NULL, 1.0, 1.0),"
    " ('dlv_f', 'evt_1', 'r', 1, 'email', 'kf', 'failed', 1, 90.0, '503', 1.0, 2.0)",
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
    " outcome, rendered) VALUES ('dlv_f', 1, 2.0, 5.0, 503, '503', 'failed', '{{}}')",
)


async def upgraded_store_works(store: Store) -> None:
    """The version-5 rows are all there; the suppression list is empty, and works."""
    await store.open()
    try:
        rows = {d.id: (d.status, d.attempts) for d in await store.list_deliveries()}
        assert rows == {"dlv_p": ("pending", 0), "dlv_f": ("failed", 1)}
        assert [a.rendered for a in await store.list_attempts("dlv_f")] == ["{}"]
        assert await store.list_suppressions() == []
        bounced = Suppression("ada@example.com", "all", Reason.BOUNCED, "msg_1", 5.0)
        assert await store.add_suppression(bounced)
        assert await store.suppressions_for(["ada@example.com"], ["all"]) == [bounced]
    finally:
        await store.close()


async def test_sqlite_version_5_database_upgrades_to_6_keeping_its_work(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    sqlite_at_version(path, 5, [statement.format(body="X'7B7D'") for statement in ROWS])
    with pytest.raises(StoreError, match="version 5, relay needs 6: run `relay db upgrade`"):
        await SQLiteStore(path).open()
    assert await SQLiteStore(path).upgrade() == (5, 6)
    raw = sqlite3.connect(path)
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "suppressions_newest" in indexes
    assert raw.execute("PRAGMA user_version").fetchone() == (6,)
    raw.close()
    await upgraded_store_works(SQLiteStore(path))


async def test_postgres_version_5_database_upgrades_to_6_keeping_its_work(
    postgres_url: str,
) -> None:
    rows = [statement.format(body="'\\x7b7d'::bytea") for statement in ROWS]
    await postgres_at_version(postgres_url, 5, rows)
    with pytest.raises(StoreError, match="version 5, relay needs 6: run `relay db upgrade`"):
        await PostgresStore(postgres_url).open()
    assert await PostgresStore(postgres_url).upgrade() == (5, 6)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'suppressions'"
            " AND schemaname = current_schema()"
        )
        indexes = {name for (name,) in await cursor.fetchall()}
    assert indexes == {"suppressions_pkey", "suppressions_newest"}
    await upgraded_store_works(PostgresStore(postgres_url))
