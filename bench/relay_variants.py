"""Experimental relay variants, to attribute ingest cost and size proposed fixes (not shipped).

Serves the real relay app exactly as ``relay serve`` does (same config loading, ``create_app``,
uvicorn settings), with one thing changed per variant, so bench/ingest.py can say what each part
costs and what a fix would gain before anyone changes relay/:

A variant is one store, optionally followed by flags, joined with "+" (e.g. stock+nolog):

  stock         the store unchanged (checks that this launcher matches `relay serve`)
  nostore       ingest answers ACCEPTED without touching SQLite or the store thread
  hop           the store's group commit and its round trip to the store thread, without SQL

(The prototype ``group`` variant is gone: the shipped stores group their commits,
relay.store.group.)
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
  onestmt       claim_due and the record of an attempt each as one statement in autocommit,
                the record not grouped with others (see OneStatementPostgresStore); the stock
                ingest is already one statement per group of events

    RELAY_DATABASE_URL=... RELAY_RULES=... CLERK_WEBHOOK_SIGNING_SECRET=... \\
        python bench/relay_variants.py stock+nolog --no-worker --port 8000
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

from relay.errors import StoreError
from relay.store.base import NewDelivery, NewEvent, Recorded
from relay.store.group import PendingIngest
from relay.store.results import ResultChange
from relay.store.sqlite import SQLiteStore
from relay.store.steps import ACCEPTED, IngestResult, Step

STORES = ("stock", "nostore", "hop")
FLAGS = ("nolog", "nosync", "nockpt", "si1ms", "gcfreeze", "gcoff", "claimidx")
PG_FLAGS = ("nolog", "si1ms", "gcfreeze", "gcoff", "nocheck", "onestmt")
CLAIM_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_claimable ON deliveries (sink, next_attempt_at, id)"
    " WHERE status IN ('pending', 'failed')"
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
    """Every ingest (``ingest`` and ``admit`` both go through ``admit``) accepted at once."""

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        return ACCEPTED


class HopStore(SQLiteStore):
    """No SQL, but the group commit and the round trip to the store thread that every batch of
    real ingests makes."""

    async def _commit_ingests(
        self, batch: Sequence[PendingIngest]
    ) -> list[IngestResult | StoreError]:
        return await self._run("hop", lambda conn: [ACCEPTED] * len(batch))


# --- PostgreSQL ----------------------------------------------------------------------------------

# The attempt and the delivery's new state in one statement: lock the delivery, number the
# attempt after the last one recorded, insert it, update the delivery (as PostgresStore._record).
_PG_RECORD = """WITH d AS (
    SELECT id, attempts, COALESCE((SELECT MAX(a.number) FROM attempts a
        WHERE a.delivery_id = deliveries.id), 0) AS last
    FROM deliveries WHERE id = %(delivery_id)s FOR UPDATE
), a AS (
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,
        outcome, rendered)
    SELECT d.id, d.last + 1, %(started_at)s, %(duration_ms)s, %(status_code)s, %(error)s,
        %(status)s, %(rendered)s FROM d
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
        """claim_due and _apply (with an attempt) as one autocommit statement each."""

        @asynccontextmanager
        async def _cursor(
            self, what: str, *, transaction: bool = True
        ) -> AsyncIterator[pg._Cursor]:
            single = what == "claim due deliveries"  # the claim is already one statement
            async with super()._cursor(what, transaction=transaction and not single) as cursor:
                yield cursor

        async def _apply(self, change: ResultChange) -> Recorded:
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
            return Recorded.MOVED

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
        kind = {"nostore": NoStore, "hop": HopStore}
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
