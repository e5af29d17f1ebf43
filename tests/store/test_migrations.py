"""Schema versions: a new database gets the current schema, an older one waits for `relay db
upgrade`, a newer one is refused; upgrades keep the data."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

import relay.cli as cli
from relay.errors import StoreError
from relay.store import IngestOutcome, SQLiteStore, Store, redact_url
from relay.store.migrations import plan
from relay.store.postgres import PostgresStore
from tests.store.helpers import BACKENDS, event, postgres_at_version, sqlite_at_version

pytestmark = pytest.mark.anyio


async def test_open_creates_the_schema_of_a_new_database(make_store: Callable[[], Store]) -> None:
    """open() gives an empty database the current schema; upgrade() then has nothing to do."""
    store = make_store()
    await store.open()
    try:
        assert await store.upgrade() == (6, 6)
        assert await store.ingest(event(), []) is IngestOutcome.ACCEPTED
    finally:
        await store.close()


async def test_open_without_create_refuses_a_new_database(make_store: Callable[[], Store]) -> None:
    """open(create=False) on a database without the schema says to run `relay db upgrade`."""
    store = make_store()
    with pytest.raises(
        StoreError, match=r"database schema is version 0, relay needs 6: run `relay db upgrade`"
    ):
        await store.open(create=False)
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


async def test_upgrade_creates_then_reports_up_to_date(make_store: Callable[[], Store]) -> None:
    """upgrade() on a closed store creates the schema (0 -> 6), then finds it current (6 -> 6)."""
    assert await make_store().upgrade() == (0, 6)
    assert await make_store().upgrade() == (6, 6)
    store = make_store()
    await store.open(create=False)
    await store.close()


async def test_replicas_opening_a_new_database_at_once_create_the_schema_once(
    make_store: Callable[[], Store],
) -> None:
    """Several replicas starting together on an empty database: one creates the schema, the
    others wait for it and find it done; all of them work."""
    replicas = [make_store() for _ in range(4)]
    opened = await asyncio.gather(*(r.open() for r in replicas), return_exceptions=True)
    try:
        assert opened == [None] * 4
        # the same message reaching each replica: each gives it its own relay id, as ingest does
        copies = [dataclasses.replace(event(), id=f"evt_replica_{i}") for i in range(4)]
        outcomes = await asyncio.gather(
            *(r.ingest(c, []) for r, c in zip(replicas, copies, strict=True))
        )
        assert sorted(o.value for o in outcomes) == ["accepted"] + ["duplicate"] * 3
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.parametrize(
    ("found", "create", "upgrade", "steps"),
    [
        (3, False, False, []),
        (0, True, False, [0, 1, 2]),
        (0, False, True, [0, 1, 2]),
        (1, False, True, [1, 2]),
        (2, True, True, [2]),
    ],
)
def test_plan_lists_the_steps_to_apply(
    found: int, create: bool, upgrade: bool, steps: list[int]
) -> None:
    """At the needed version: nothing to do; a new database: every step; upgrade: the rest."""
    assert list(plan(found, 3, create=create, upgrade=upgrade, what="open x")) == steps


@pytest.mark.parametrize(
    ("found", "create", "message"),
    [
        (0, False, "open x: database schema is version 0, relay needs 3: run `relay db upgrade`"),
        (1, True, "open x: database schema is version 1, relay needs 3: run `relay db upgrade`"),
        (4, True, "open x: schema version 4 is newer than 3: it was written by a newer relay"),
    ],
)
def test_plan_refuses_older_without_upgrade_and_any_newer(
    found: int, create: bool, message: str
) -> None:
    """An older schema needs an explicit upgrade; a newer one is never touched, even to upgrade."""
    with pytest.raises(StoreError) as info:
        plan(found, 3, create=create, upgrade=False, what="open x")
    assert str(info.value).startswith(message)
    if found > 3:
        with pytest.raises(StoreError, match="newer"):
            plan(found, 3, create=True, upgrade=True, what="upgrade x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_upgrade_command(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`relay db upgrade` creates the schema, then reports it up to date; no password shown."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
    else:
        url = request.getfixturevalue("postgres_url")
    assert cli.main(["db", "upgrade", "--database", url]) == 0
    assert cli.main(["db", "upgrade", "--database", url]) == 0
    shown = redact_url(url)
    assert capsys.readouterr().out.splitlines() == [
        f"database {shown}: upgraded from 0 to 6",
        f"database {shown}: schema version 6 (up to date)",
    ]


def test_db_upgrade_command_reports_failure_without_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unreachable database fails `relay db upgrade` with exit 1 and a redacted URL."""
    url = "postgresql://relay:hunter2@127.0.0.1:1/relay"
    assert cli.main(["db", "upgrade", "--database", url]) == 1
    err = capsys.readouterr().err
    assert (
        "relay db upgrade: upgrade PostgreSQL store postgresql://relay:***@127.0.0.1:1/relay" in err
    )
    assert "hunter2" not in err


async def test_sqlite_version_1_database_upgrades_to_6(tmp_path: Path) -> None:
    """A database of schema version 1 is refused until upgraded; the upgrade adds the claim
    index that claim_due then uses (no sort of the whole backlog)."""
    from relay.store.migrations import SQLITE_STEPS

    raw = sqlite3.connect(tmp_path / "relay.db")
    for statement in SQLITE_STEPS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="version 1, relay needs 6: run `relay db upgrade`"):
        await SQLiteStore(tmp_path / "relay.db").open()
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (1, 6)
    raw = sqlite3.connect(tmp_path / "relay.db")
    plan = raw.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM deliveries d WHERE d.status IN ('pending', 'failed')"
        " AND d.next_attempt_at <= 1 AND (d.lease_until IS NULL OR d.lease_until <= 1)"
        " AND d.sink IN ('x') ORDER BY d.next_attempt_at, d.id LIMIT 10"
    ).fetchall()
    raw.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "deliveries_claimable" in details
    assert "TEMP B-TREE" not in details


async def assert_upgraded_rows_found(store: Store) -> None:
    """The rows written at version 2 (event evt_1 / msg_1, dead delivery dlv_1 to slack) are
    found at the current version by sender message id and by status and sink."""
    await store.open()
    try:
        found = await store.get_event("msg_1")
        assert found is not None
        assert found.id == "evt_1"
        assert [d.id for d in await store.list_deliveries(status="dead", sink="slack")] == ["dlv_1"]
    finally:
        await store.close()


async def test_sqlite_version_2_database_upgrades_to_6_keeping_its_data(tmp_path: Path) -> None:
    """Version 3 drops the indexes ingest no longer writes and adds the dead-delivery index;
    the rows stay, and lookups by message id, sink and status still answer from indexes."""
    import relay.store.sqlite as sqlite_module

    sqlite_at_version(tmp_path / "relay.db", 2)
    v2 = SQLiteStore(tmp_path / "relay.db")
    with pytest.raises(StoreError, match="version 2, relay needs 6"):
        await v2.open()
    raw = sqlite3.connect(tmp_path / "relay.db")
    raw.execute(
        "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1.0, X'7B7D')"
    )
    raw.execute(
        "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
        " next_attempt_at, created_at, updated_at) VALUES"
        " ('dlv_1', 'evt_1', 'r', 0, 'slack', 'k1', 'dead', 1.0, 1.0, 1.0)"
    )
    raw.commit()
    raw.close()
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (2, 6)
    raw = sqlite3.connect(tmp_path / "relay.db")
    indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not indexes & {
        "deliveries_due",
        "deliveries_sink",
        "deliveries_rule",
        "deliveries_created",
        "events_message_id",
    }
    assert {"deliveries_dead", "deliveries_claimable", "deliveries_newest"} <= indexes

    def plan(query: str) -> str:
        return " ".join(str(row[-1]) for row in raw.execute(f"EXPLAIN QUERY PLAN {query}"))

    listing = "SELECT id FROM deliveries WHERE {} ORDER BY created_at DESC, id LIMIT 5"
    assert plan(listing.format("status = 'dead'")) == "SCAN deliveries USING INDEX deliveries_dead"
    for where in ("sink = 'slack'", "rule = 'r' AND sink = 'slack'", "1"):  # no sort: a walk
        assert "TEMP B-TREE" not in plan(listing.format(where))
    by_message = plan(sqlite_module._GET_EVENT.replace("?", "'msg_1'"))
    assert "SCAN events" not in by_message
    assert "sqlite_autoindex_events_2" in by_message
    raw.close()
    await assert_upgraded_rows_found(SQLiteStore(tmp_path / "relay.db"))


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer relay (relay's application_id, user_version > 6) is refused
    rather than misread."""
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (0, 6)
    raw = sqlite3.connect(tmp_path / "relay.db")
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    with pytest.raises(StoreError, match="schema version 7 is newer than 6"):
        await SQLiteStore(tmp_path / "relay.db").open()


async def test_postgres_newer_schema_is_refused(postgres_url: str) -> None:
    """A database written by a newer relay (relay_schema version 7) is refused, not misread."""
    assert await PostgresStore(postgres_url).upgrade() == (0, 6)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("UPDATE relay_schema SET version = 7")
    with pytest.raises(StoreError, match="schema version 7 is newer than 6"):
        await PostgresStore(postgres_url).open()


async def test_postgres_version_2_database_upgrades_to_6_keeping_its_data(
    postgres_url: str,
) -> None:
    """As on SQLite: version 3 swaps the listing indexes, keeps the rows, and the lookups by
    sender message id and by dead status still find them."""
    rows = [
        "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1, '{}')",
        "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
        " next_attempt_at, created_at, updated_at) VALUES"
        " ('dlv_1', 'evt_1', 'r', 0, 'slack', 'k1', 'dead', 1, 1, 1)",
    ]
    await postgres_at_version(postgres_url, 2, rows)
    with pytest.raises(StoreError, match="version 2, relay needs 6"):
        await PostgresStore(postgres_url).open()
    assert await PostgresStore(postgres_url).upgrade() == (2, 6)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
        indexes = {name for (name,) in await cursor.fetchall()}
    assert not indexes & {"deliveries_sink", "deliveries_rule", "deliveries_created"}
    assert "events_message_id" not in indexes
    assert {"deliveries_dead", "deliveries_newest", "deliveries_claimable"} <= indexes
    await assert_upgraded_rows_found(PostgresStore(postgres_url))


async def test_postgres_schema_lives_in_its_own_tables(postgres_url: str) -> None:
    """The schema is events, deliveries, attempts, the workflow tables (batches, rule_limits),
    the suppression list and relay_schema (one row: the version)."""
    await PostgresStore(postgres_url).upgrade()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema ORDER BY 1"
        )
        assert [r[0] for r in await cursor.fetchall()] == [
            "attempts",
            "batches",
            "deliveries",
            "events",
            "relay_schema",
            "rule_limits",
            "suppressions",
        ]
        cursor = await conn.execute("SELECT version FROM relay_schema")
        assert await cursor.fetchall() == [(6,)]


async def assert_attempts_keep_renders(store: Store) -> None:
    """The attempt written at version 3 reads back without a render; a new one keeps its own."""
    from relay.store import Attempt

    await store.open()
    try:
        [old] = await store.list_attempts("dlv_1")
        assert (old.number, old.error, old.rendered) == (1, "boom", None)
        await store.record_dead(Attempt("dlv_1", 2.0, 5.0, 422, "no", '{"to": "a"}'), "dlv_1", "no")
        assert [a.rendered for a in await store.list_attempts("dlv_1")] == [None, '{"to": "a"}']
    finally:
        await store.close()


V3_ROWS = (
    "INSERT INTO events VALUES ('evt_1', 'clerk', 'msg_1', 'user.created', 1, {body})",
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
    " next_attempt_at, created_at, updated_at) VALUES"
    " ('dlv_1', 'evt_1', 'r', 0, 'slack', 'k1', 'failed', 1, 1, 1)",
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
    " outcome) VALUES ('dlv_1', 1, 1, 5, 500, 'boom', 'failed')",
)


async def test_sqlite_version_3_database_upgrades_to_6_keeping_its_attempts(tmp_path: Path) -> None:
    """Version 5 gives attempts the render they sent; a version-3 file is refused until
    upgraded, and its attempts stay, with no render."""

    sqlite_at_version(tmp_path / "relay.db", 3, [s.format(body="X'7B7D'") for s in V3_ROWS])
    with pytest.raises(StoreError, match="version 3, relay needs 6: run `relay db upgrade`"):
        await SQLiteStore(tmp_path / "relay.db").open()
    assert await SQLiteStore(tmp_path / "relay.db").upgrade() == (3, 6)
    await assert_attempts_keep_renders(SQLiteStore(tmp_path / "relay.db"))


async def test_postgres_version_3_database_upgrades_to_6_keeping_its_attempts(
    postgres_url: str,
) -> None:
    """As on SQLite: a version-3 database is refused until upgraded, then keeps its attempts."""

    await postgres_at_version(postgres_url, 3, [s.format(body="'{}'") for s in V3_ROWS])
    with pytest.raises(StoreError, match="version 3, relay needs 6: run `relay db upgrade`"):
        await PostgresStore(postgres_url).open()
    assert await PostgresStore(postgres_url).upgrade() == (3, 6)
    await assert_attempts_keep_renders(PostgresStore(postgres_url))
