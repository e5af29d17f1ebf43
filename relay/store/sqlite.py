"""The SQLite store: one file in WAL mode, every commit synced before it returns.

All SQL runs on one dedicated thread that owns the connection, so the event loop never blocks and
calls are serialised in submission order. WAL lets another process (``relay`` CLI commands) read
and write the same file while ``relay serve`` runs; a writer waits up to ``busy_timeout_s`` for the
lock. ``synchronous = FULL`` makes an ingest that returned ACCEPTED survive a power cut.

What a batch of ingests or attempt results writes in its transaction is in
``relay.store.sqlite_writes`` (an ingest with workflow steps: ``relay.store.admit``); this module
owns the connection, its thread and every other query.
sqlite3 errors are translated at this boundary (``sqlite_writes.translate``): a BUSY, LOCKED,
READONLY, IOERR, FULL, CANTOPEN or PROTOCOL failure means "cannot commit right now"
(StoreUnavailableError, 503 at ingest); anything else is a StoreError. Events are the
deduplication record and are only removed by ``purge`` (retention).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from relay.errors import StoreError
from relay.recipients.addresses import Reason, Suppression
from relay.store import identity
from relay.store import sqlite_writes as writes
from relay.store import suppressions as kept
from relay.store.admit import Admits
from relay.store.base import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    NewDelivery,
    NewEvent,
    Purged,
    QueueStats,
    Recorded,
)
from relay.store.group import GroupCommit, PendingIngest
from relay.store.migrations import EVENT_SOURCES, SQLITE_STEPS, plan
from relay.store.queries import (
    CLOSE_BATCH,
    DIGEST_EVENTS,
    PROMOTE,
    PURGE_BATCHES,
    STILL_NEEDED,
    replayable,
)
from relay.store.results import RecordsResults, ResultChange
from relay.store.sqlite_space import DiskSpace, is_full
from relay.store.steps import IngestResult, Step

T = TypeVar("T")

_MIGRATIONS = SQLITE_STEPS
SCHEMA_VERSION = len(_MIGRATIONS)
_EVENT_COLS = "id, source, message_id, type, received_at, body"
_DELIVERY_COLS = (
    "id, event_id, rule, send_index, sink, idempotency_key, status, attempts, next_attempt_at, "
    "lease_until, last_error, created_at, updated_at, delivered_at, cancel_key, batch_id"
)
_ATTEMPT_COLS = (
    "id, delivery_id, number, started_at, duration_ms, status_code, error, outcome, rendered"
)
_CLAIM_COLS = (
    "d.id, d.event_id, e.source, e.message_id, e.type, e.received_at, e.body, d.rule, "
    "d.send_index, d.sink, d.idempotency_key, d.attempts, d.batch_id"
)
_CLAIMABLE = (  # due and not leased; two parameters: now, now
    "d.status IN ('pending', 'failed')",
    "d.next_attempt_at <= ?",
    "(d.lease_until IS NULL OR d.lease_until <= ?)",
)


def _migrate(conn: sqlite3.Connection, what: str, create: bool, upgrade: bool) -> tuple[int, int]:
    """Apply the steps ``plan`` asks for under the write lock; returns the (from, to) versions.

    Foreign keys are off while the steps run (a step may rebuild a table that others refer to;
    the pragma only takes effect outside a transaction) and checked before the commit."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if plan(found, SCHEMA_VERSION, create=create, upgrade=upgrade, what=what):
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            # Another process may have done it while we waited for the lock: look again.
            with writes.transaction(conn):
                (found,) = conn.execute("PRAGMA user_version").fetchone()
                for step in plan(found, SCHEMA_VERSION, create=create, upgrade=upgrade, what=what):
                    for statement in _MIGRATIONS[step]:
                        conn.execute(statement)
                if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise StoreError(f"{what}: the upgrade would break a foreign key")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute(f"PRAGMA application_id = {identity.APPLICATION_ID}")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA foreign_keys = ON")
    elif create and _application_id(conn) != identity.APPLICATION_ID:
        with writes.transaction(conn):  # relay's file from before it set the id: set it now
            conn.execute(f"PRAGMA application_id = {identity.APPLICATION_ID}")
    return found, SCHEMA_VERSION


def _application_id(conn: sqlite3.Connection) -> int:
    (found,) = conn.execute("PRAGMA application_id").fetchone()
    return int(found)


def _select(head: str, clauses: Sequence[str], tail: str) -> str:
    """A query from constant fragments; values always travel as ``?`` parameters."""
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return f"SELECT {head}{where} {tail}"


def _filters(filters: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The clauses and parameters of the filters whose value is given."""
    given = {clause: value for clause, value in filters.items() if value is not None}
    return list(given), list(given.values())


# By relay id (two parameters: the same key twice), else the latest event with that sender
# message id, through the unique (source, message_id) index.
_GET_EVENT = (
    f"SELECT {_EVENT_COLS} FROM events WHERE id = ?"  # noqa: S608 (constants only)
    f" UNION ALL SELECT * FROM (SELECT {_EVENT_COLS} FROM events"
    f" WHERE source IN ({EVENT_SOURCES}) AND message_id = ? ORDER BY received_at DESC LIMIT 1)"
)

_PROBE = "SELECT 1 FROM deliveries LIMIT 1"

# Changes a worker makes under its claim's lease: the last two parameters are the lease twice
# (or NULL twice: a change that holds no lease), as in ResultChange.holds.
_RELEASE = (
    "UPDATE deliveries SET lease_until = NULL WHERE id = ? AND (? IS NULL OR lease_until = ?)"
)
_DEFER = (
    "UPDATE deliveries SET lease_until = NULL, next_attempt_at = ?, status = CASE WHEN ?"
    " AND status IN ('pending', 'failed') THEN 'scheduled' ELSE status END"
    " WHERE id = ? AND (? IS NULL OR lease_until = ?)"
)
_PROMOTE = PROMOTE.format(skip="")


# Retention: the oldest events received before ? that nothing needs any more, up to ?.
_PURGEABLE = (
    "SELECT e.id FROM events e WHERE e.received_at < ?"  # noqa: S608 (constants only)
    f" AND NOT {STILL_NEEDED} ORDER BY e.received_at LIMIT ?"
)
# The deliveries and attempts of the events listed in {} (placeholders), before they go.
_PURGE_COUNTS = (
    "SELECT (SELECT COUNT(*) FROM deliveries WHERE event_id IN ({0})), (SELECT COUNT(*) FROM"
    " attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id IN ({0}))"
)


class SQLiteStore(RecordsResults, Admits):
    """The Store on one SQLite file. ``open()`` before use, ``close()`` after."""

    def __init__(
        self, path: str | Path, *, busy_timeout_s: float = 5.0, disk_reserve_bytes: int = 0
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # Reads for /metrics and /readyz: a read-only connection on a thread of its own, so
        # they never queue behind ingest's commits (WAL readers do not block the writer).
        self._reader: ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._space = DiskSpace(self.path, disk_reserve_bytes)  # relay.store.sqlite_space
        self._ingests = GroupCommit(self._commit_ingests)
        self._results: GroupCommit[ResultChange, Recorded] = GroupCommit(self._commit_results)

    def observe_commits(self, observe: Callable[[str, float, int], None]) -> None:
        self._ingests.observe = partial(observe, "ingest")
        self._results.observe = partial(observe, "results")

    async def open(self, create: bool = True, *, upgrade: bool = False) -> None:
        """Open on the store's own thread, creating the file. A new file gets the schema unless
        ``create`` is false; an older schema is a StoreError unless ``upgrade``."""
        if self._executor is None:
            await self._start(create, upgrade)
            if create:  # serving: keep its reserve of disk for a day it is full
                await self._run("make the disk reserve", self._space.start)

    async def upgrade(self) -> tuple[int, int]:
        """Create or upgrade the schema to SCHEMA_VERSION. Returns the (from, to) versions."""
        if self._executor is not None:
            what = f"upgrade SQLite store {self.path}"
            return await self._run(what, lambda conn: _migrate(conn, what, True, True))
        versions = await self._start(True, True)
        await self.close()
        return versions

    async def _start(self, create: bool, upgrade: bool) -> tuple[int, int]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn, versions = await loop.run_in_executor(executor, self._connect, create, upgrade)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor, self._conn = executor, conn
        return versions

    async def close(self) -> None:
        """Finish queued work (ingests and results waiting for a commit included), then close the
        connection and stop the thread."""
        await self._ingests.drain()
        await self._results.drain()
        await self._close_reader()
        executor, conn = self._executor, self._conn
        self._executor = self._conn = None
        if executor is None or conn is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        finally:
            executor.shutdown(wait=True)

    async def _close_reader(self) -> None:
        reader, conn = self._reader, self._reader_conn
        self._reader = self._reader_conn = None
        if reader is None:
            return
        try:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(reader, conn.close)
        finally:
            reader.shutdown(wait=True)

    async def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the store's read-only connection and its own thread (opened on first use)."""
        if self._executor is None:
            raise StoreError(f"{what}: the store is not open")
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-sqlite-read")
        if self._reader_conn is None:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            try:
                self._reader_conn = await loop.run_in_executor(
                    self._reader,
                    partial(sqlite3.connect, uri, uri=True, timeout=self._busy_timeout_s),
                )
            except sqlite3.Error as exc:
                raise writes.translate(exc, what) from exc
        return await loop.run_in_executor(
            self._reader, partial(self._call, self._reader_conn, what, fn, full=None)
        )

    def _connect(self, create: bool, upgrade: bool) -> tuple[sqlite3.Connection, tuple[int, int]]:
        what = f"{'upgrade' if upgrade else 'open'} SQLite store {self.path}"
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                cached_statements=writes.STATEMENTS,
            )
        except sqlite3.Error as exc:
            raise writes.translate(exc, what) from exc
        try:
            # Whose file it is, and whether it is intact, before anything is written to it.
            identity.sqlite_version(conn, what)
            if create:  # serve, worker, `relay db upgrade`: not the read commands
                identity.quick_check(conn, what)
            conn.execute("PRAGMA foreign_keys = ON")
            mode = self._enable_wal(conn)
            if mode != "wal":
                raise StoreError(f"{what}: journal mode is {mode!r}, WAL is required")
            conn.execute("PRAGMA synchronous = FULL")
            versions = _migrate(conn, what, create, upgrade)
        except BaseException as exc:
            conn.close()  # rolls back a half-made schema
            if isinstance(exc, sqlite3.Error):
                raise writes.translate(exc, what) from exc
            raise
        return conn, versions

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL. Changing the journal mode does not wait on the busy timeout, so when
        several processes open a new file at once, try again until the timeout is used up."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                locked = ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in (5, 6)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    async def _run(
        self, what: str, fn: Callable[[sqlite3.Connection], T], *, full: str | None = "retry"
    ) -> T:
        """``fn`` on the writer thread. If it fails for a full disk, the reserve is given back
        and the WAL checkpointed (``DiskSpace.filled``), then (``full="retry"``) ``fn`` runs
        once more; ``full="fail"`` (ingest) fails it all the same."""
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            raise StoreError(f"{what}: the store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            executor, partial(self._call, conn, what, fn, full=full)
        )

    def _call(
        self,
        conn: sqlite3.Connection,
        what: str,
        fn: Callable[[sqlite3.Connection], T],
        *,
        full: str | None,
    ) -> T:
        """``fn(conn)``, its sqlite3 errors translated. On the writer (``full`` set), a failure
        for a full disk first has ``DiskSpace.filled`` give the reserve back and checkpoint."""
        try:
            return self._once(conn, what, fn)
        except StoreError as exc:
            if full is None or not (is_full(exc.__cause__) or is_full(exc.__context__)):
                raise
            self._space.filled(conn)
            if full != "retry":
                raise
        return self._once(conn, what, fn)

    @staticmethod
    def _once(conn: sqlite3.Connection, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise writes.translate(exc, what) from exc
        finally:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    async def _write(self, what: str, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per row of parameters, in one transaction. Returns rows changed."""

        def run(conn: sqlite3.Connection) -> int:
            with writes.transaction(conn):
                return conn.executemany(sql, rows).rowcount

        return await self._run(what, run)

    async def _fetch(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        return await self._run(what, lambda conn: conn.execute(sql, params).fetchall())

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        """Group commit (``relay.store.group``): the ingests that arrive together are written by
        one transaction on the store's thread, with one fsync."""
        return await self._ingests.submit(PendingIngest(event, deliveries, steps))

    async def _commit_ingests(
        self, batch: Sequence[PendingIngest]
    ) -> list[IngestResult | StoreError]:
        def run(conn: sqlite3.Connection) -> list[IngestResult | StoreError]:
            problem = self._space.ingest_problem(conn)  # low on disk space: room left?
            if problem is not None:
                raise problem
            return writes.ingest_batch(conn, batch)

        return await self._run("ingest", run, full="fail")

    async def promote_due(self, now: float, limit: int = 1000) -> int:
        """A read first: the write lock only when something is due."""
        due = "SELECT 1 FROM deliveries WHERE status = 'scheduled' AND next_attempt_at <= ? LIMIT 1"
        if not await self._fetch("promote scheduled deliveries", due, [now]):
            return 0
        return await self._write("promote scheduled deliveries", _PROMOTE, [(now, now, limit)])

    async def digest_events(self, batch_id: str, send_index: int) -> list[bytes]:
        rows = await self._fetch(f"read digest {batch_id}", DIGEST_EVENTS, [batch_id, send_index])
        return [bytes(body) for (body,) in rows]

    async def claim_due(
        self,
        now: float,
        limit: int,
        lease_s: float,
        sink: str | None = None,
        rules: Collection[str] | None = None,
    ) -> list[ClaimedDelivery]:
        clauses, params = list(_CLAIMABLE), list[object]([now, now])
        if sink is not None:
            clauses.append("d.sink = ?")
            params.append(sink)
        if rules is not None:
            clauses.append(f"d.rule IN ({', '.join('?' * len(rules))})")
            params.extend(rules)
        return await self._claim(now, limit, lease_s, clauses, params)

    async def claim_orphans(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str], rules: Collection[str]
    ) -> list[ClaimedDelivery]:
        clauses, params = list(_CLAIMABLE), list[object]([now, now, *sinks, *rules])
        clauses.append(
            f"(d.sink NOT IN ({', '.join('?' * len(sinks))})"
            f" OR d.rule NOT IN ({', '.join('?' * len(rules))}))"
        )
        return await self._claim(now, limit, lease_s, clauses, params)

    async def _claim(
        self, now: float, limit: int, lease_s: float, clauses: list[str], params: list[object]
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due rows matching ``clauses``, oldest due first."""
        head = f"{_CLAIM_COLS} FROM deliveries d JOIN events e ON e.id = d.event_id"
        sql = _select(head, clauses, "ORDER BY d.next_attempt_at, d.id LIMIT ?")
        params = [*params, limit]

        def run(conn: sqlite3.Connection) -> list[ClaimedDelivery]:
            with writes.transaction(conn):
                rows = conn.execute(sql, params).fetchall()
                conn.executemany(
                    "UPDATE deliveries SET lease_until = ?, updated_at = ? WHERE id = ?",
                    [(now + lease_s, now, row[0]) for row in rows],
                )
                batches = [(row[-1],) for row in rows if row[-1] is not None]
                conn.executemany(CLOSE_BATCH, batches)
            # the claim's columns, then its lease, then its batch (the last column read)
            return [ClaimedDelivery(*(*row[:-1], now + lease_s, row[-1])) for row in rows]

        return await self._run("claim due deliveries", run)

    async def _apply(self, change: ResultChange) -> Recorded:
        """Group commit, as for ingest: the results that arrive together (a sink's concurrent
        sends finishing) are recorded by one transaction, with one fsync."""
        return await self._results.submit(change)

    async def _commit_results(self, batch: Sequence[ResultChange]) -> list[Recorded | StoreError]:
        return await self._run("record results", lambda conn: writes.record_batch(conn, batch))

    async def release(self, delivery_ids: Collection[str], *, lease: float | None = None) -> None:
        await self._write("release leases", _RELEASE, [(i, lease, lease) for i in delivery_ids])

    async def defer(
        self,
        delivery_id: str,
        next_attempt_at: float,
        *,
        lease: float | None = None,
        scheduled: bool = False,
    ) -> None:
        params = (next_attempt_at, scheduled, delivery_id, lease, lease)
        await self._write("defer delivery", _DEFER, [params])

    async def release_all_leases(self) -> int:
        sql = "UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL"
        return await self._write("release all leases", sql, [()])

    async def get_event(self, id_or_message_id: str) -> EventRecord | None:
        """By relay id, else by sender message id (the latest received, if sources share one)."""
        rows = await self._fetch(
            f"get event {id_or_message_id}", _GET_EVENT, [id_or_message_id, id_or_message_id]
        )
        by_id = [row for row in rows if row[0] == id_or_message_id]
        return EventRecord(*(by_id or rows)[0]) if rows else None

    async def list_events(
        self, *, type_glob: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """``type_glob`` is a case-sensitive SQLite GLOB: ``*``, ``?`` and ``[...]``."""
        clauses, params = _filters({"type GLOB ?": type_glob, "received_at >= ?": since})
        tail = "ORDER BY received_at DESC, id LIMIT ?"
        sql = _select(f"{_EVENT_COLS} FROM events", clauses, tail)
        return [
            EventRecord(*row) for row in await self._fetch("list events", sql, [*params, limit])
        ]

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        sink: str | None = None,
        rule: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
        batch_id: str | None = None,
    ) -> list[DeliveryRecord]:
        clauses, params = _filters(
            {
                "status = ?": None if status is None else DeliveryStatus(status).value,
                "sink = ?": sink,
                "rule = ?": rule,
                "event_id = ?": event_id,
                "created_at >= ?": since,
                "batch_id = ?": batch_id,
            }
        )
        tail = "ORDER BY created_at DESC, id LIMIT ?"
        sql = _select(f"{_DELIVERY_COLS} FROM deliveries", clauses, tail)
        rows = await self._fetch("list deliveries", sql, [*params, limit])
        return [DeliveryRecord.from_row(row) for row in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        sql = f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE id = ?"  # noqa: S608 (constants)
        rows = await self._fetch(f"get delivery {delivery_id}", sql, [delivery_id])
        return DeliveryRecord.from_row(rows[0]) if rows else None

    async def count_deliveries(self, event_ids: Collection[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        ids = list(event_ids)
        for start in range(0, len(ids), 500):  # SQLite binds at most 32,766 parameters
            chunk = ids[start : start + 500]
            sql = (
                "SELECT event_id, status, COUNT(*) FROM deliveries"  # noqa: S608 (constants only)
                f" WHERE event_id IN ({', '.join('?' * len(chunk))}) GROUP BY event_id, status"
            )
            for event_id, status, n in await self._fetch("count deliveries", sql, chunk):
                counts.setdefault(event_id, {})[status] = n
        return counts

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        sql = _select(f"{_ATTEMPT_COLS} FROM attempts", ["delivery_id = ?"], "ORDER BY number")
        rows = await self._fetch(f"list attempts of {delivery_id}", sql, [delivery_id])
        return [AttemptRecord.from_row(row) for row in rows]

    async def replay(
        self,
        delivery_ids: Collection[str],
        now: float,
        *,
        also: Collection[DeliveryStatus] = (),
    ) -> int:
        sql = (
            "UPDATE deliveries"  # noqa: S608 (constants only)
            " SET status = 'pending', next_attempt_at = ?, lease_until = NULL,"
            " attempts = 0, updated_at = ? WHERE id = ?"
            f" AND status IN ({replayable(also)})"
            " AND (lease_until IS NULL OR lease_until <= ?)"
        )
        return await self._write(
            "replay deliveries", sql, [(now, now, i, now) for i in delivery_ids]
        )

    async def queue_stats(self, now: float) -> QueueStats:
        due = " AND ".join(_CLAIMABLE)
        head = f"COUNT(*), SUM({due}), MIN(CASE WHEN {due} THEN d.next_attempt_at END)"
        sql = _select(f"{head} FROM deliveries d", _CLAIMABLE[:1], "")
        ((total, due_count, oldest),) = await self._read(
            "queue stats", lambda conn: conn.execute(sql, [now] * 4).fetchall()
        )
        age = None if oldest is None else now - oldest
        return QueueStats(due=due_count or 0, pending_total=total, oldest_due_age_s=age)

    async def probe(self) -> None:
        """Room on the disk for ingest, and a read on the reader connection: the file is there,
        and readable."""
        problem = self._space.probe_problem()
        if problem is not None:
            raise problem
        await self._read("probe", lambda conn: conn.execute(_PROBE).fetchall())

    async def purge(self, older_than: float, *, limit: int = 1000) -> Purged:
        """One write transaction (the store's thread runs nothing else meanwhile, so no replay
        can slip between the check and the delete): the oldest purgeable events, counted, then
        deleted with their deliveries and attempts (ON DELETE CASCADE), and the digest batches
        left empty."""

        def run(conn: sqlite3.Connection) -> Purged:
            with writes.transaction(conn):
                ids = [row[0] for row in conn.execute(_PURGEABLE, (older_than, limit))]
                if not ids:
                    return Purged()
                marks = ", ".join("?" * len(ids))
                counts = conn.execute(_PURGE_COUNTS.format(marks), ids + ids).fetchone()
                events = conn.execute(f"DELETE FROM events WHERE id IN ({marks})", ids).rowcount  # noqa: S608 (placeholders only)
                conn.execute(PURGE_BATCHES, (older_than,))
            return Purged(events, *counts)

        return await self._run("purge events", run)

    async def suppressions_for(
        self, addresses: Collection[str], scopes: Collection[str]
    ) -> list[Suppression]:
        """On the read-only connection: the worker's lookup never queues behind a commit."""
        found, kinds = list(addresses), list(scopes)
        if not found or not kinds:
            return []
        sql = kept.lookup(len(found), len(kinds))
        rows = await self._read(
            "look up suppressions", lambda conn: conn.execute(sql, [*found, *kinds]).fetchall()
        )
        return [kept.from_row(row) for row in rows]

    async def add_suppression(self, suppression: Suppression) -> bool:
        what = f"suppress {suppression.address}"
        return await self._write(what, kept.ADD, [kept.row(suppression)]) > 0

    async def remove_suppressions(self, address: str, scope: str | None = None) -> int:
        return await self._write(f"unsuppress {address}", kept.REMOVE, [(address, scope, scope)])

    async def list_suppressions(
        self,
        *,
        address: str | None = None,
        scope: str | None = None,
        reason: Reason | None = None,
        limit: int = 100,
    ) -> list[Suppression]:
        clauses, params = kept.filters(address, scope, reason)
        sql = kept.LIST.format(where=kept.where(clauses))
        rows = await self._fetch("list suppressions", sql, [*params, limit])
        return [kept.from_row(row) for row in rows]
