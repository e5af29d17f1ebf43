"""Never adopt a foreign database: what relay opens is checked before anything is written (no
WAL switch, no table, no version), a foreign one is refused naming what it holds, relay's own
files carry its application_id, and a damaged file is found at start."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import psycopg
import pytest

from relay.errors import StoreError
from relay.store import IngestOutcome, SQLiteStore
from relay.store.identity import APPLICATION_ID
from relay.store.migrations import SQLITE_STEPS
from relay.store.postgres import PostgresStore
from tests.store.helpers import delivery, event

pytestmark = pytest.mark.anyio


def another_apps_file(path: Path, *, user_version: int = 7, application_id: int = 0) -> str:
    """A SQLite file of another application (rollback journal, its own tables and version);
    returns the hash of its bytes."""
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY);"
        "CREATE INDEX users_email ON users (email);"
        "INSERT INTO users (email) VALUES ('ada@example.com');"
    )
    raw.execute(f"PRAGMA user_version = {user_version}")
    raw.execute(f"PRAGMA application_id = {application_id}")
    raw.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untouched(path: Path, digest: str) -> None:
    """The file is byte for byte as it was, still in its rollback-journal mode, no WAL made."""
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not Path(f"{path}-wal").exists()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        raw.close()


@pytest.mark.parametrize("how", ["open", "open without create", "upgrade"])
async def test_another_apps_sqlite_file_is_refused_untouched(tmp_path: Path, how: str) -> None:
    """Serving, reading or upgrading another application's file (with a user_version higher
    than relay's) is refused, saying what it holds, not "written by a newer relay"; the file is
    left byte for byte as it was, not switched to WAL."""
    path = tmp_path / "app.db"
    digest = another_apps_file(path)
    store = SQLiteStore(path)
    opening = store.upgrade() if how == "upgrade" else store.open(create=how == "open")
    with pytest.raises(StoreError) as info:
        await opening
    assert str(info.value) == (
        f"{how.split()[0]} SQLite store {path}: not a relay database: it holds tables orders,"
        " users; index users_email (user_version 7); relay never writes to another"
        " application's database: point RELAY_DATABASE_URL at a new file of its own"
    )
    untouched(path, digest)


async def test_a_file_naming_another_application_is_refused(tmp_path: Path) -> None:
    """A file whose header names another application (application_id) is refused as such."""
    path = tmp_path / "app.db"
    digest = another_apps_file(path, user_version=0, application_id=0x46534C21)
    with pytest.raises(
        StoreError, match=r"its header names another application \(application_id 0x46534c21\)"
    ):
        await SQLiteStore(path).open()
    untouched(path, digest)


async def test_relay_stamps_its_files_and_keeps_opening_older_ones(tmp_path: Path) -> None:
    """A new file gets relay's application_id with its schema. A file an older relay made
    (relay's tables and version, no id) still opens: reading it leaves it as it is, serving it
    sets the id."""
    new = tmp_path / "new.db"
    await SQLiteStore(new).upgrade()
    older = tmp_path / "older.db"
    raw = sqlite3.connect(older)
    for step in SQLITE_STEPS:
        for statement in step:
            raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {len(SQLITE_STEPS)}")
    raw.commit()
    raw.close()

    def application_id(path: Path) -> int:
        raw = sqlite3.connect(path)
        try:
            (found,) = raw.execute("PRAGMA application_id").fetchone()
            return int(found)
        finally:
            raw.close()

    assert application_id(new) == APPLICATION_ID
    reader = SQLiteStore(older)
    await reader.open(create=False)
    await reader.close()
    assert application_id(older) == 0
    server = SQLiteStore(older)
    await server.open()
    try:
        assert await server.ingest(event(), [delivery(event().id)]) is IngestOutcome.ACCEPTED
    finally:
        await server.close()
    assert application_id(older) == APPLICATION_ID


async def test_a_damaged_file_is_refused_at_start_by_quick_check(tmp_path: Path) -> None:
    """A relay file with a page overwritten (an index page here): serving it fails at open with
    what quick_check found, instead of every claim failing later; reading commands still open
    it (they run no check)."""
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    for n in range(400):
        e = event(n)
        await store.ingest(e, [delivery(e.id)])
    await store.close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    (root,) = raw.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'deliveries_claimable'"
    ).fetchone()
    raw.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size + 8)
        file.write(b"\xff" * 64)
    with pytest.raises(StoreError, match=r"the database file is damaged \(quick_check: .+\)"):
        await SQLiteStore(path).open()
    reader = SQLiteStore(path)
    await reader.open(create=False)
    await reader.close()


async def test_a_postgres_schema_holding_another_apps_tables_is_refused(postgres_url: str) -> None:
    """A PostgreSQL schema with tables of its own and no relay_schema: opening and upgrading are
    refused, naming them; relay creates nothing there."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE users (id serial PRIMARY KEY)")
        await conn.execute("CREATE VIEW active_users AS SELECT id FROM users")
    with pytest.raises(StoreError) as info:
        await PostgresStore(postgres_url).open()
    message = str(info.value)
    assert "not a relay database: schema relay_test_" in message
    assert (
        "holds table users; sequence users_id_seq; view active_users, and no relay_schema"
        in message
    )
    with pytest.raises(
        StoreError, match="holds table users; sequence users_id_seq; view active_users, and no"
    ):
        await PostgresStore(postgres_url).upgrade()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema ORDER BY 1"
        )
        assert [row[0] for row in await cursor.fetchall()] == ["active_users", "users"]
