"""Schema step 4 (workflows), on both backends: a version-3 database with work in it is refused
until upgraded, then keeps every row (events, deliveries in each status, attempts, the cascade
from events), takes the new statuses and columns, and has the workflow tables and indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from relay.errors import StoreError
from relay.store import DeliveryStatus, NewDelivery, SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.store.helpers import T0, event, postgres_at_version, sqlite_at_version
from tests.store.steps_helpers import cancel, digest

pytestmark = pytest.mark.anyio

# A version-3 store with work in it: a pending, a failed (with its attempt) and a dead delivery.
ROWS = (
    "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1.0, '{}')",
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
    " attempts, next_attempt_at, last_error, created_at, updated_at) VALUES"
    " ('dlv_p', 'evt_1', 'r', 0, 'slack', 'kp', 'pending', 0, 1.0, NULL, 1.0, 1.0),"
    " ('dlv_f', 'evt_1', 'r', 1, 'slack', 'kf', 'failed', 1, 90.0, '503', 1.0, 2.0),"
    " ('dlv_d', 'evt_1', 'r', 2, 'email', 'kd', 'dead', 1, 1.0, 'permanent: 400', 1.0, 3.0)",
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
    " outcome) VALUES ('dlv_f', 1, 2.0, 5.0, 503, '503', 'failed')",
)
WORKFLOW_INDEXES = {
    "deliveries_scheduled",
    "deliveries_cancel_key",
    "deliveries_batch",
    "batches_open",
}
KEPT_INDEXES = {"deliveries_claimable", "deliveries_newest", "deliveries_dead", "deliveries_event"}


async def upgraded_store_works(store: Store) -> None:
    """The version-3 rows are all there as they were; the new statuses and steps work."""
    await store.open()
    try:
        rows = {d.id: d for d in await store.list_deliveries()}
        assert {i: (d.status, d.attempts, d.last_error) for i, d in rows.items()} == {
            "dlv_p": ("pending", 0, None),
            "dlv_f": ("failed", 1, "503"),
            "dlv_d": ("dead", 1, "permanent: 400"),
        }
        assert {(d.cancel_key, d.batch_id) for d in rows.values()} == {(None, None)}
        assert [(a.number, a.outcome) for a in await store.list_attempts("dlv_f")] == [
            (1, "failed")
        ]
        (claimed,) = await store.claim_due(1.0, 10, 60)
        assert claimed.id == "dlv_p"
        later = NewDelivery("dlv_s", "onboarding", 0, "email", "ks", T0 + 99,
                            status=DeliveryStatus.SCHEDULED, cancel_key="user_1")  # fmt: skip
        await store.ingest(event(2), [later])
        assert (await cancel(store, 3, "user_1")).cancelled == (("dlv_s", "email"),)
        assert (await digest(store, 4, T0)).steps[0].outcome == "opened"
        assert (await store.purge(10.0)).events == 0  # evt_1 still has work
        await store.record_dead(None, "dlv_p", "done", lease=claimed.lease_until)
        await store.replay(["dlv_f"], 5.0)
        await store.record_dead(None, "dlv_f", "done")
        assert (
            await store.purge(10.0)
        ).events == 1  # evt_1, its deliveries and attempts: the cascade
        assert await store.list_attempts("dlv_f") == []
    finally:
        await store.close()


async def test_sqlite_version_3_database_upgrades_to_6_keeping_its_work(tmp_path: Path) -> None:
    """SQLite rebuilds the deliveries table (its CHECK of the statuses cannot be altered):
    every row and attempt is kept, foreign keys still hold, and the claim still walks its
    index without sorting."""
    path = tmp_path / "relay.db"
    sqlite_at_version(path, 3, ROWS)
    with pytest.raises(StoreError, match="version 3, relay needs 6: run `relay db upgrade`"):
        await SQLiteStore(path).open()
    assert await SQLiteStore(path).upgrade() == (3, 6)
    raw = sqlite3.connect(path)
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert indexes >= (WORKFLOW_INDEXES | KEPT_INDEXES)
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    assert "deliveries_v4" not in {
        r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    plan = " ".join(
        str(r[-1])
        for r in raw.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE status = 'scheduled'"
            " AND next_attempt_at <= 5 ORDER BY next_attempt_at, id LIMIT 10"
        )
    )
    raw.close()
    assert "deliveries_scheduled" in plan
    assert "TEMP B-TREE" not in plan
    await upgraded_store_works(SQLiteStore(path))


async def test_postgres_version_3_database_upgrades_to_6_keeping_its_work(
    postgres_url: str,
) -> None:
    """PostgreSQL widens the status check and adds the columns in place; the rows are kept."""
    rows = [statement.replace("'{}')", "'\\x7b7d'::bytea)") for statement in ROWS]
    await postgres_at_version(postgres_url, 3, rows)
    with pytest.raises(StoreError, match="version 3, relay needs 6"):
        await PostgresStore(postgres_url).open()
    assert await PostgresStore(postgres_url).upgrade() == (3, 6)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
        indexes = {name for (name,) in await cursor.fetchall()}
    assert indexes >= (WORKFLOW_INDEXES | KEPT_INDEXES)
    await upgraded_store_works(PostgresStore(postgres_url))
