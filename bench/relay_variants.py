"""Experimental relay variants, to attribute ingest cost and size proposed fixes (not shipped).

Serves the real relay app exactly as ``relay serve`` does (same config loading, ``create_app``,
uvicorn settings), with one thing changed per variant, so bench/ingest.py can say what each part
costs and what a fix would gain before anyone changes relay/:

A variant is one store, optionally followed by flags, joined with "+" (e.g. group+nolog):

  stock         the store unchanged (checks that this launcher matches `relay serve`)
  nostore       ingest() answers ACCEPTED without touching SQLite or the store thread
  hop           nostore plus the round trip to the store thread every real ingest makes
  group         prototype group commit: concurrent ingest() calls share one transaction and one
                fsync on the store's single thread; each caller is answered when its batch is
                durable (see GroupCommitSQLiteStore)
flags:
  nolog         relay's logger at WARNING: no per-event "event accepted" JSON line
  nosync        PRAGMA synchronous = NORMAL: WAL commits without an fsync (NOT durable; shows
                what the fsync costs)
  nockpt        PRAGMA wal_autocheckpoint = 0: no checkpoint inside a commit (the WAL grows;
                shows what checkpoints cost the commit that triggers them)
  si1ms         sys.setswitchinterval(0.001) instead of 5 ms (GIL hand-off latency)
  gcfreeze      gc.freeze() once the app is built: start-up objects leave the collector's view
  gcoff         gc.disable() (attribution only: shows what cyclic GC pauses cost)
  claimidx      add a partial index on deliveries (sink, next_attempt_at, id) WHERE status IN
                ('pending', 'failed'), which claim_due's query can walk in ORDER BY order

On PostgreSQL (RELAY_DATABASE_URL=postgresql://...) the store is PostgresStore ("stock" only)
and these flags apply, with nolog, si1ms, gcfreeze and gcoff:
  nocheck       the connection pool without its per-checkout check (psycopg_pool runs an empty
                query, one round trip, every time a connection is taken from the pool)
  onestmt       ingest, claim_due and the record of an attempt each as one statement in
                autocommit, instead of BEGIN, 2 to 3 statements and COMMIT in a transaction:
                one round trip instead of 4 to 5 (see OneStatementPostgresStore)

    RELAY_DATABASE_URL=... RELAY_RULES=... CLERK_WEBHOOK_SIGNING_SECRET=... \\
        python bench/relay_variants.py group+nolog --no-worker --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from relay.errors import StoreError
from relay.store.base import IngestOutcome, NewDelivery, NewEvent
from relay.store.sqlite import SQLiteStore
from relay.store.sqlite_writes import translate

STORES = ("stock", "nostore", "hop", "group")
FLAGS = ("nolog", "nosync", "nockpt", "si1ms", "gcfreeze", "gcoff", "claimidx")
PG_FLAGS = ("nolog", "si1ms", "gcfreeze", "gcoff", "nocheck", "onestmt")
CLAIM_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_claimable ON deliveries (sink, next_attempt_at, id)"
    " WHERE status IN ('pending', 'failed')"
)

_INSERT_EVENT = (
    "INSERT INTO events (id, source, message_id, type, received_at, body)"
    " VALUES (:id, :source, :message_id, :type, :received_at, :body)"
    " ON CONFLICT (source, message_id) DO NOTHING"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key,"
    " status, next_attempt_at, created_at, updated_at) VALUES (:id, :event_id,"
    " :rule, :send_index, :sink, :idempotency_key, 'pending', :next_attempt_at, :now, :now)"
)


def with_statements(base: type[SQLiteStore], statements: Sequence[str]) -> type[SQLiteStore]:
    """``base`` whose connection also runs ``statements`` once opened."""
    if not statements:
        return base

    class Store(base):  # type: ignore[valid-type, misc]
        def _connect(self, *args: Any, **kwargs: Any) -> Any:  # signature varies by version
            result = super()._connect(*args, **kwargs)
            conn = result[0] if isinstance(result, tuple) else result
            for statement in statements:
                conn.execute(statement)
            return result

    return Store


class NoStore(SQLiteStore):
    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        return IngestOutcome.ACCEPTED


class HopStore(SQLiteStore):
    """No SQL, but the same round trip to the store thread that every real ingest makes."""

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        rows = [{**asdict(d), "event_id": event.id, "now": event.received_at} for d in deliveries]
        return await self._run("hop", lambda conn: IngestOutcome.ACCEPTED if rows else None)


_Item = tuple[dict[str, Any], list[dict[str, Any]], "asyncio.Future[IngestOutcome]"]


class GroupCommitSQLiteStore(SQLiteStore):
    """Group commit on the store's one writer thread, batched on the event loop.

    ``ingest`` appends its rows and a future to a pending list (loop thread only, no lock). If no
    batch is in flight, one is started with ``call_soon``, so every request handled in the same
    loop iteration joins it. While a batch is in flight (its commit is syncing), new requests
    accumulate; when it completes, its callers are answered and everything that accumulated
    goes as the next batch. So the batch size adapts to the commit latency, a lone request is
    not delayed by any timer, and the store thread is woken once per batch, not per event.

    The batch runs on the store thread: one BEGIN IMMEDIATE, each event in its own SAVEPOINT (a
    failing event fails alone, as a duplicate is reported alone), one COMMIT (one fsync). Other
    store calls keep their order on the same single-thread executor.
    """

    max_batch = 256

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        super().__init__(path, busy_timeout_s=busy_timeout_s)
        self._pending: list[_Item] = []
        self._in_flight = False
        self.batches = 0
        self.batched = 0

    async def close(self) -> None:
        if self.batches:  # uvicorn re-raises SIGTERM after shutdown: say it now
            print(
                f"group commit: {self.batched} events in {self.batches} commits "
                f"(mean batch {self.batched / self.batches:.1f})",
                file=sys.stderr,
                flush=True,
            )
        await super().close()

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        if self._executor is None or self._conn is None:
            return await super().ingest(event, deliveries)  # raises "not open"
        loop = asyncio.get_running_loop()
        rows = [{**asdict(d), "event_id": event.id, "now": event.received_at} for d in deliveries]
        future: asyncio.Future[IngestOutcome] = loop.create_future()
        self._pending.append((asdict(event), rows, future))
        if not self._in_flight:
            self._in_flight = True
            loop.call_soon(self._submit)
        return await future

    def _submit(self) -> None:
        """On the loop: send what is pending as one batch to the store thread."""
        executor, conn = self._executor, self._conn
        batch = self._pending[: self.max_batch]
        self._pending = self._pending[self.max_batch :]
        if executor is None or conn is None:
            error = StoreError("ingest: the store is not open")
            _resolve([item[2] for item in batch], [error] * len(batch))
            self._in_flight = False
            return
        done = asyncio.wrap_future(executor.submit(self._write_batch, conn, batch))
        done.add_done_callback(lambda f: self._finished(batch, f))
        self.batches += 1
        self.batched += len(batch)

    def _finished(self, batch: list[_Item], done: asyncio.Future[list[Any]]) -> None:
        """On the loop: answer the batch's callers, then start the next batch if any."""
        exc = done.exception()
        results = [exc] * len(batch) if exc is not None else done.result()
        _resolve([item[2] for item in batch], results)
        if self._pending:
            self._submit()
        else:
            self._in_flight = False

    @staticmethod
    def _write_batch(conn: sqlite3.Connection, batch: list[_Item]) -> list[Any]:
        """On the store thread: one transaction, one savepoint per event, one commit."""
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for event, rows, _ in batch:
                try:
                    conn.execute("SAVEPOINT one")
                    if conn.execute(_INSERT_EVENT, event).rowcount == 0:
                        results.append(IngestOutcome.DUPLICATE)
                    else:
                        conn.executemany(_INSERT_DELIVERY, rows)
                        results.append(IngestOutcome.ACCEPTED)
                    conn.execute("RELEASE one")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO one")
                    conn.execute("RELEASE one")
                    results.append(translate(exc, f"ingest message {event['message_id']}"))
            conn.execute("COMMIT")
        except Exception as exc:  # the whole batch failed: every caller gets the error
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = (
                translate(exc, f"ingest a batch of {len(batch)}")
                if isinstance(exc, sqlite3.Error)
                else exc
            )
            return [error] * len(batch)
        return results


def _resolve(futures: list[asyncio.Future[IngestOutcome]], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():  # the caller went away (cancelled): its row is committed anyway
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


# --- PostgreSQL ----------------------------------------------------------------------------------

_PG_INGEST = """WITH e AS (
    INSERT INTO events (id, source, message_id, type, received_at, body)
    VALUES (%(id)s, %(source)s, %(message_id)s, %(type)s, %(received_at)s, %(body)s)
    ON CONFLICT (source, message_id) DO NOTHING RETURNING id
), d AS (
    INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,
        next_attempt_at, created_at, updated_at)
    SELECT x.id, e.id, x.rule, x.send_index, x.sink, x.key, 'pending', x.due,
        %(received_at)s, %(received_at)s
    FROM e, unnest(%(d_ids)s::text[], %(d_rules)s::text[], %(d_index)s::int[],
        %(d_sinks)s::text[], %(d_keys)s::text[], %(d_due)s::float8[])
        AS x(id, rule, send_index, sink, key, due)
    RETURNING 1
)
SELECT count(*) FROM e"""

# The attempt and the delivery's new state in one statement: lock the delivery, number the
# attempt after the last one recorded, insert it, update the delivery (as PostgresStore._record).
_PG_RECORD = """WITH d AS (
    SELECT id, attempts, COALESCE((SELECT MAX(a.number) FROM attempts a
        WHERE a.delivery_id = deliveries.id), 0) AS last
    FROM deliveries WHERE id = %(delivery_id)s FOR UPDATE
), a AS (
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,
        outcome)
    SELECT d.id, d.last + 1, %(started_at)s, %(duration_ms)s, %(status_code)s, %(error)s,
        %(status)s FROM d
)
UPDATE deliveries SET status = %(status)s, attempts = d.attempts + 1, lease_until = NULL,
    next_attempt_at = COALESCE(%(next)s::double precision, deliveries.next_attempt_at),
    last_error = %(last_error)s, updated_at = %(updated_at)s,
    delivered_at = COALESCE(%(delivered_at)s::double precision, deliveries.delivered_at)
FROM d WHERE deliveries.id = d.id"""


def postgres_store(url: str, flags: Sequence[str]) -> Any:
    """PostgresStore, or its experiment, for ``flags``."""
    from contextlib import asynccontextmanager

    from relay.store import postgres as pg

    if "nocheck" in flags:
        from psycopg_pool import AsyncConnectionPool

        class NoCheckPool(AsyncConnectionPool):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("check", None)
                super().__init__(*args, **kwargs)

        setattr(pg, "AsyncConnectionPool", NoCheckPool)  # noqa: B010  # in this process only

    if "onestmt" not in flags:
        return pg.PostgresStore(url)

    class OneStatementPostgresStore(pg.PostgresStore):
        """ingest, claim_due and _record (with an attempt) as one autocommit statement each."""

        @asynccontextmanager
        async def _cursor(self, what: str, *, transaction: bool = True) -> Any:
            single = what == "claim due deliveries"  # the claim is already one statement
            async with super()._cursor(what, transaction=transaction and not single) as cursor:
                yield cursor

        async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
            params = {
                **asdict(event),
                "d_ids": [d.id for d in deliveries],
                "d_rules": [d.rule for d in deliveries],
                "d_index": [d.send_index for d in deliveries],
                "d_sinks": [d.sink for d in deliveries],
                "d_keys": [d.idempotency_key for d in deliveries],
                "d_due": [d.next_attempt_at for d in deliveries],
            }
            what = f"ingest {event.source} message {event.message_id}"
            async with self._cursor(what, transaction=False) as cursor:
                await cursor.execute(_PG_INGEST, params)
                row = await cursor.fetchone()
            return IngestOutcome.ACCEPTED if row and row[0] else IngestOutcome.DUPLICATE

        async def _apply(self, change: Any) -> bool:
            """Without the stock record's lease check (the bench never loses a lease)."""
            if change.attempt is None:  # a dead letter without an attempt: rare, the stock way
                return await super()._apply(change)
            params = {
                **asdict(change.attempt),
                "status": change.status.value,
                "next": change.next_attempt_at,
                "last_error": change.last_error,
                "updated_at": change.updated_at,
                "delivered_at": change.delivered_at,
            }
            async with self._cursor(change.describe(), transaction=False) as cursor:
                await cursor.execute(_PG_RECORD, params)
                if cursor.rowcount != 1:
                    raise StoreError(f"{change.describe()}: no such delivery")
            return True

    return OneStatementPostgresStore(url)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from relay import logs
    from relay.cli._shared import load
    from relay.server.app import create_app
    from relay.settings import Settings
    from relay.store import open_store

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant", help="STORE[+FLAG...]: see above")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="as `relay serve --no-worker`")
    parser.add_argument("--worker-only", action="store_true", help="as `relay worker`")
    args = parser.parse_args(argv)
    base, *flags = args.variant.split("+")
    settings = Settings.from_env().with_(port=args.port, worker=not args.no_worker)
    postgres = settings.database_url.partition("://")[0] in ("postgresql", "postgres")
    if postgres and (base != "stock" or any(f not in PG_FLAGS for f in flags)):
        parser.error(f"on PostgreSQL: stock[+FLAG...] with flags {PG_FLAGS}")
    if not postgres and (base not in STORES or any(f not in FLAGS for f in flags)):
        parser.error(f"unknown variant {args.variant!r}: stores {STORES}, flags {FLAGS}")
    if args.worker_only:
        settings = settings.with_(ingest=False)
    logs.configure(settings.log_format)
    if "nolog" in flags:
        logging.getLogger("relay").setLevel(logging.WARNING)
    if "si1ms" in flags:
        sys.setswitchinterval(0.001)
    config = load(settings, "serve", sys.stderr)
    if config is None:
        return 1
    stock = open_store(settings.database_url)
    if postgres:
        store = postgres_store(settings.database_url, flags)
    else:
        assert isinstance(stock, SQLiteStore)
        statements = [
            sql
            for flag, sql in (
                ("nosync", "PRAGMA synchronous = NORMAL"),
                ("nockpt", "PRAGMA wal_autocheckpoint = 0"),
                ("claimidx", CLAIM_INDEX),
            )
            if flag in flags
        ]
        kind = {"nostore": NoStore, "hop": HopStore, "group": GroupCommitSQLiteStore}
        store = with_statements(kind.get(base, SQLiteStore), statements)(stock.path)
    app = create_app(settings, config, store)
    if "gcfreeze" in flags:
        gc.collect()
        gc.freeze()
    if "gcoff" in flags:
        gc.disable()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
