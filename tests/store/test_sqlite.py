"""SQLite specifics: the file's mode and version, a locked or impossible or foreign file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.errors import StoreError, StoreUnavailableError
from relay.store import IngestOutcome, SQLiteStore, Store
from tests.store.helpers import T0, delivery, event, sqlite_only

pytestmark = pytest.mark.anyio


@sqlite_only
async def test_sqlite_file_is_wal_and_versioned(store: Store, tmp_path: Path) -> None:
    """The SQLite file is in WAL mode and carries schema version 4."""
    raw = sqlite3.connect(tmp_path / "relay.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (6,)
    finally:
        raw.close()


async def test_sqlite_locked_database_is_unavailable_at_ingest(tmp_path: Path) -> None:
    """While another writer holds the lock past busy_timeout, ingest raises StoreUnavailableError
    and stores nothing; it succeeds once the lock is gone."""
    store = SQLiteStore(tmp_path / "relay.db", busy_timeout_s=0.05)
    await store.open()
    raw = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match=r"ingest clerk message msg_1: .*locked"):
            await store.ingest(event(), [delivery(event().id)])
        raw.execute("ROLLBACK")
        assert await store.get_event("msg_1") is None
        assert await store.ingest(event(), [delivery(event().id)]) is IngestOutcome.ACCEPTED
    finally:
        raw.close()
        await store.close()


async def test_sqlite_impossible_path_is_unavailable_at_open(tmp_path: Path) -> None:
    """A database path under a regular file cannot be opened: StoreUnavailableError at open()."""
    (tmp_path / "a-file").write_text("")
    store = SQLiteStore(tmp_path / "a-file" / "relay.db")
    with pytest.raises(StoreUnavailableError, match=r"open SQLite store .*unable to open"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


async def test_sqlite_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite fails open() with StoreError, not the retryable kind."""
    (tmp_path / "relay.db").write_bytes(b"not a database" * 512)
    with pytest.raises(StoreError, match="file is not a database") as info:
        await SQLiteStore(tmp_path / "relay.db").open()
    assert not isinstance(info.value, StoreUnavailableError)


async def test_sqlite_queue_stats_never_wait_behind_the_writer(tmp_path: Path) -> None:
    """Queue statistics (what /metrics and /readyz read) run on a read-only connection and a
    thread of their own: they answer while the store's writer thread is busy (here for 1 s),
    instead of queueing behind ingest's commits."""
    import asyncio
    import threading

    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    try:
        e = event()
        await store.ingest(e, [delivery(e.id)])
        release = threading.Event()
        busy = asyncio.ensure_future(store._run("hold the writer", lambda conn: release.wait(1)))
        await asyncio.sleep(0.05)
        stats = await asyncio.wait_for(store.queue_stats(T0), timeout=0.5)
        assert not busy.done()
        assert (stats.pending_total, stats.due) == (1, 1)
        release.set()
        await busy
    finally:
        await store.close()
