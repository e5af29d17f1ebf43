"""The PostgreSQL store: psycopg 3 (async) over a connection pool, for several relay processes.

Every replica opens the same database. ``claim_due`` locks the rows it leases with ``FOR UPDATE
SKIP LOCKED``, so each due delivery goes to exactly one worker; a worker that dies leaves a lease
that simply expires (``lease_s``), after which any replica claims the delivery again. The leases
compare the callers' clocks, so replicas must keep them in sync (NTP). Deduplication is the unique
key events (source, message_id): a racing second ingest of one message waits for the first to
commit and is then DUPLICATE. Ingest uses group commit (``relay.store.group``): the events that
arrive together are written by one statement, in one round trip and one commit; an event with
workflow steps is written by a transaction of its own (``relay.store.admit``). Attempt results
that arrive together share one transaction too (its rows locked in id order, so two replicas'
batches cannot deadlock).

Times are Unix seconds in ``double precision``, bodies ``bytea``; text columns use the "C"
collation so that ordering and globs compare bytes as SQLite does. Tables are created unqualified,
in the connection's ``search_path``. The schema version is the one row of ``relay_schema``.

The statements it runs are in ``relay.store.postgres_sql``. psycopg errors are translated here: an
OperationalError (cannot connect, connection lost, server shutting down, deadlock or serialisation
failure, out of resources, pool timeout) or a read-only standby means "cannot commit right now"
(StoreUnavailableError, 503 at ingest); anything else is a StoreError. No error text carries the
URL's password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from functools import partial
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from relay.errors import StoreError, StoreUnavailableError
from relay.recipients.addresses import Reason, Suppression
from relay.store import admit, identity, redact_url
from relay.store import postgres_sql as q
from relay.store import queries as shared
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
from relay.store.migrations import EVENT_SOURCES, POSTGRES_STEPS, plan
from relay.store.results import RecordsResults, ResultChange
from relay.store.steps import ACCEPTED, DUPLICATE, IngestResult, Step

_MIGRATIONS = POSTGRES_STEPS
SCHEMA_VERSION = len(_MIGRATIONS)

_Cursor = psycopg.AsyncCursor[tuple[Any, ...]]
# A dead peer is given up on after 30 s idle + 3 unanswered probes 10 s apart.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class PostgresStore(RecordsResults, Admits):
    """The Store on a PostgreSQL database (``postgresql://user:password@host:port/dbname``).

    ``open()`` before use, ``close()`` after. Each instance has its own pool of ``min_size`` to
    ``max_size`` connections; ``timeout_s`` bounds connecting, waiting for a free connection and
    an ingest waiting behind a commit in progress.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10.0
    ) -> None:
        self.url = redact_url(url)  # for display: the password is ***
        self._url = url
        self._password = unquote(urlsplit(url).password or "")
        self._min_size, self._max_size, self._timeout_s = min_size, max_size, timeout_s
        self._connect_timeout = max(2, round(timeout_s))  # libpq: whole seconds, at least 2
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None
        self._ingests = GroupCommit(self._commit, busy_s=timeout_s)
        # No busy_s for results: one queued behind a slow commit waits for its turn, as on
        # SQLite, rather than fail (its delivery would then be sent again once its lease ends).
        self._results: GroupCommit[ResultChange, Recorded] = GroupCommit(self._commit_results)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def observe_commits(self, observe: Callable[[str, float, int], None]) -> None:
        self._ingests.observe = partial(observe, "ingest")
        self._results.observe = partial(observe, "results")

    async def open(self, create: bool = True, *, upgrade: bool = False) -> None:
        """Connect and check the schema: an empty database gets it unless ``create`` is false; an
        older one is a StoreError unless ``upgrade``. Then open the pool."""
        if self._pool is not None:
            return
        await self._migrate(create, upgrade)
        pool = AsyncConnectionPool(
            self._url,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout_s,
            kwargs={"autocommit": True, **self._connection_options()},
            # No check per checkout (a round trip each): a connection that broke while idle
            # fails its statement, which is a StoreUnavailableError (503, the sender retries),
            # and the pool replaces it.
            name="relay",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self._timeout_s)
        except psycopg.Error as exc:
            await pool.close()
            raise self._translate(exc, f"open PostgreSQL store {self.url}") from exc
        self._pool = pool

    def _connection_options(self) -> dict[str, Any]:
        """libpq options for every connection: ``connect_timeout`` from ``timeout_s``, and TCP
        keepalives, so that a connection to a server that vanished without closing it (a
        failover, a dropped route) fails in about a minute rather than after the system's two
        hours, while a statement waits on it. The URL's own values win."""
        try:
            given = conninfo_to_dict(self._url)
        except psycopg.Error:
            given = {}  # connecting reports the malformed URL, with its password hidden
        options = {"connect_timeout": self._connect_timeout, **_KEEPALIVES}
        return {name: value for name, value in options.items() if name not in given}

    async def upgrade(self) -> tuple[int, int]:
        """Create or upgrade the schema to SCHEMA_VERSION. Returns the (from, to) versions."""
        return await self._migrate(True, True)

    async def close(self) -> None:
        """Finish queued ingests, then close the pool."""
        await self._ingests.drain()
        await self._results.drain()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _migrate(self, create: bool, upgrade: bool) -> tuple[int, int]:
        """Apply what ``plan`` asks for on a connection of its own, in one transaction."""
        what = f"{'upgrade' if upgrade else 'open'} PostgreSQL store {self.url}"
        try:
            async with await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **self._connection_options()
            ) as conn:
                found = await q.schema_version(conn)
                if found == 0:  # no relay schema: refuse a schema that holds anything else
                    rows = await (await conn.execute(q.SCHEMA_OBJECTS)).fetchall()
                    schema = rows[0][0] if rows else None
                    identity.postgres_refusal(schema, [(r[1], r[2]) for r in rows], what)
                if not plan(found, SCHEMA_VERSION, create=create, upgrade=upgrade, what=what):
                    return found, SCHEMA_VERSION
                # Held until this connection closes. Only a transaction begun after taking it sees
                # the catalog as another replica that held it may have left it: look again.
                await conn.execute(q.SCHEMA_LOCK)
                async with conn.transaction():
                    found = await q.schema_version(conn)
                    for step in plan(
                        found, SCHEMA_VERSION, create=create, upgrade=upgrade, what=what
                    ):
                        for statement in _MIGRATIONS[step]:
                            await conn.execute(statement)
                    await conn.execute(q.VERSION_TABLE)
                    await conn.execute(q.SET_VERSION, (SCHEMA_VERSION,))
                return found, SCHEMA_VERSION
        except psycopg.Error as exc:
            raise self._translate(exc, what) from exc

    def _translate(self, exc: psycopg.Error, what: str) -> StoreError:
        message = " ".join(str(exc).split())  # one line: drop psycopg's DETAIL/HINT breaks
        if self._password:
            for secret in {self._password, quote(self._password, safe="")}:
                message = message.replace(secret, "***")
        unavailable = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
        kind = StoreUnavailableError if isinstance(exc, unavailable) else StoreError
        return kind(f"{what}: {message}")

    @asynccontextmanager
    async def _cursor(self, what: str, *, transaction: bool = True) -> AsyncIterator[_Cursor]:
        """A cursor on a pooled connection, in a transaction unless told otherwise (a single
        read statement needs none); psycopg errors come out translated."""
        if self._pool is None:
            raise StoreError(f"{what}: the store is not open")
        try:
            async with self._pool.connection() as conn:
                if not transaction:
                    async with conn.cursor() as cursor:
                        yield cursor
                    return
                async with conn.transaction(), conn.cursor() as cursor:
                    yield cursor
        except psycopg.Error as exc:
            raise self._translate(exc, what) from exc

    async def _fetch(self, what: str, query: sql.SQL | sql.Composed, params: Any) -> list[Any]:
        async with self._cursor(what, transaction=False) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def _write(self, what: str, query: str, params: Any) -> int:
        """Run one statement in a transaction; returns how many rows it changed."""
        async with self._cursor(what) as cursor:
            await cursor.execute(query, params)
            return cursor.rowcount

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        """Group commit (``relay.store.group``): the ingests that arrive together are written by
        one statement, so one round trip and one commit."""
        return await self._ingests.submit(PendingIngest(event, deliveries, steps))

    async def _commit(self, batch: Sequence[PendingIngest]) -> list[IngestResult | StoreError]:
        """The ingests without workflow steps in one statement (``_commit_plain``), then each
        one with steps in a transaction of its own, in the order they arrived."""
        plain = [item for item in batch if not item.steps]
        done = dict(
            zip(map(id, plain), await self._commit_plain(plain) if plain else [], strict=True)
        )
        for item in batch:
            if item.steps:
                done[id(item)] = await self._ingest_alone(item)
        return [done[id(item)] for item in batch]

    async def _commit_plain(
        self, batch: Sequence[PendingIngest]
    ) -> list[IngestResult | StoreError]:
        """The batch in one statement. Its events go in (source, message id) order, so that two
        replicas inserting the same messages take their locks in the same order (no deadlock);
        the first of equal keys wins, as in the batch. If the statement fails for a reason other
        than "cannot commit now", each event is written on its own, so one that fails (a NUL in
        its type, say) fails alone."""
        items = sorted(batch, key=lambda item: (item.event.source, item.event.message_id))
        events = [item.event for item in items]
        params = {
            "ids": [e.id for e in events],
            "sources": [e.source for e in events],
            "message_ids": [e.message_id for e in events],
            "types": [e.type for e in events],
            "received": [e.received_at for e in events],
            "bodies": [e.body for e in events],
            **q.delivery_arrays(items),
        }
        try:
            async with self._cursor("ingest", transaction=False) as cursor:  # one statement
                await cursor.execute(q.INGEST_BATCH, params)
                inserted = {row[0] for row in await cursor.fetchall()}
        except StoreUnavailableError:
            raise
        except StoreError:
            return [await self._ingest_alone(item) for item in batch]
        return [ACCEPTED if item.event.id in inserted else DUPLICATE for item in batch]

    async def _ingest_alone(self, item: PendingIngest) -> IngestResult | StoreError:
        """One event and its deliveries in one statement, or with its workflow steps in one
        transaction (``relay.store.admit``); its own error if it fails."""
        what = item.describe()
        try:
            if item.steps:
                async with self._cursor(what) as cursor:
                    return await _drive(cursor, admit.write(item, admit.POSTGRES))
            params = {**asdict(item.event), **q.delivery_arrays([item])}
            async with self._cursor(what, transaction=False) as cursor:  # one statement: atomic
                await cursor.execute(q.INGEST, params)
                row = await cursor.fetchone()
        except StoreUnavailableError:
            raise
        except StoreError as exc:
            return exc
        return ACCEPTED if row and row[0] else DUPLICATE

    async def promote_due(self, now: float, limit: int = 1000) -> int:
        """Rows another replica is promoting are skipped, not waited for."""
        return await self._write("promote scheduled deliveries", _PROMOTE, (now, now, limit))

    async def digest_events(self, batch_id: str, send_index: int) -> list[bytes]:
        rows = await self._fetch(f"read digest {batch_id}", _DIGEST_EVENTS, (batch_id, send_index))
        return [bytes(body) for (body,) in rows]

    async def claim_due(
        self,
        now: float,
        limit: int,
        lease_s: float,
        sink: str | None = None,
        rules: Collection[str] | None = None,
    ) -> list[ClaimedDelivery]:
        """Rows locked by another replica's claim in progress are skipped, not waited for."""
        only = []
        if sink is not None:
            only.append(sql.SQL(" AND sink = %(sink)s"))
        if rules is not None:
            only.append(sql.SQL(" AND rule = ANY(%(rules)s::text[])"))
        chosen = {"sink": sink, "rules": list(rules or ())}
        return await self._claim(now, limit, lease_s, sql.Composed(only), chosen)

    async def claim_orphans(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str], rules: Collection[str]
    ) -> list[ClaimedDelivery]:
        only = sql.SQL(" AND (sink <> ALL(%(sinks)s::text[]) OR rule <> ALL(%(rules)s::text[]))")
        chosen = {"sinks": list(sinks), "rules": list(rules)}
        return await self._claim(now, limit, lease_s, only, chosen)

    async def _claim(
        self,
        now: float,
        limit: int,
        lease_s: float,
        only: sql.Composable,
        chosen: dict[str, Any],
    ) -> list[ClaimedDelivery]:
        query = sql.SQL(q.CLAIM).format(due=sql.SQL(q.DUE), only=only)
        params = {"now": now, "until": now + lease_s, "limit": limit, **chosen}
        async with self._cursor("claim due deliveries") as cursor:
            await cursor.execute(query, params)
            return [ClaimedDelivery(*row) for row in await cursor.fetchall()]

    async def _apply(self, change: ResultChange) -> Recorded:
        """Group commit, as for ingest: the results that arrive together (a sink's concurrent
        sends finishing) are recorded by one transaction."""
        return await self._results.submit(change)

    async def _commit_results(self, batch: Sequence[ResultChange]) -> list[Recorded | StoreError]:
        """The batch in one transaction of three statements: lock and read every delivery, add
        the attempts, move the deliveries (``ResultChange.writes`` decides what each writes). A
        result for a delivery that is gone fails alone. If the transaction fails for a reason
        other than "cannot commit now", each result is recorded in a transaction of its own, so
        one that the database refuses fails alone."""
        try:
            async with self._cursor("record results") as cursor:
                return await _record_all(cursor, batch)
        except StoreUnavailableError:
            raise
        except StoreError:
            return [await self._record_alone(change) for change in batch]

    async def _record_alone(self, change: ResultChange) -> Recorded | StoreError:
        try:
            async with self._cursor(change.describe()) as cursor:
                (outcome,) = await _record_all(cursor, [change])
        except StoreUnavailableError:
            raise
        except StoreError as exc:
            return exc
        return outcome

    async def release(self, delivery_ids: Collection[str], *, lease: float | None = None) -> None:
        await self._write("release leases", q.RELEASE, (list(delivery_ids), lease, lease))

    async def defer(
        self,
        delivery_id: str,
        next_attempt_at: float,
        *,
        lease: float | None = None,
        scheduled: bool = False,
    ) -> None:
        params = (next_attempt_at, scheduled, delivery_id, lease, lease)
        await self._write("defer delivery", q.DEFER, params)

    async def release_all_leases(self) -> int:
        """Does nothing and returns 0: on PostgreSQL other replicas may hold live leases, and
        dropping them would send their deliveries twice. Leases left by a dead worker expire on
        their own (after ``lease_s``), and then any replica claims the deliveries again."""
        return 0

    async def get_event(self, id_or_message_id: str) -> EventRecord | None:
        """By relay id, else by sender message id (the latest received, if sources share one)."""
        query = sql.SQL(
            "SELECT {cols} FROM events WHERE id = %(key)s"  # noqa: S608 (constants only)
            " UNION ALL (SELECT {cols} FROM events"
            f" WHERE source IN ({EVENT_SOURCES}) AND message_id = %(key)s"
            " ORDER BY received_at DESC LIMIT 1)"
        ).format(cols=q.EVENT_COLS)
        what = f"get event {id_or_message_id}"
        rows = await self._fetch(what, query, {"key": id_or_message_id})
        by_id = [row for row in rows if row[0] == id_or_message_id]
        return EventRecord(*(by_id or rows)[0]) if rows else None

    async def list_events(
        self, *, type_glob: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """``type_glob`` matches as SQLite's case-sensitive GLOB: ``*``, ``?`` and ``[...]``."""
        regex = None if type_glob is None else q.glob_to_regex(type_glob)
        where, params = q.where({"type ~ %s": regex, "received_at >= %s": since})
        query = sql.SQL("SELECT {} FROM events{} ORDER BY received_at DESC, id LIMIT %s")
        rows = await self._fetch("list events", query.format(q.EVENT_COLS, where), [*params, limit])
        return [EventRecord(*row) for row in rows]

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
        where, params = q.where(
            {
                "status = %s": None if status is None else DeliveryStatus(status).value,
                "sink = %s": sink,
                "rule = %s": rule,
                "event_id = %s": event_id,
                "created_at >= %s": since,
                "batch_id = %s": batch_id,
            }
        )
        select = sql.SQL("SELECT {} FROM deliveries{} ORDER BY created_at DESC, id LIMIT %s")
        query = select.format(q.DELIVERY_COLS, where)
        rows = await self._fetch("list deliveries", query, [*params, limit])
        return [DeliveryRecord.from_row(row) for row in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        query = sql.SQL("SELECT {} FROM deliveries WHERE id = %s").format(q.DELIVERY_COLS)
        rows = await self._fetch(f"get delivery {delivery_id}", query, (delivery_id,))
        return DeliveryRecord.from_row(rows[0]) if rows else None

    async def count_deliveries(self, event_ids: Collection[str]) -> dict[str, dict[str, int]]:
        query = sql.SQL(
            "SELECT event_id, status, count(*) FROM deliveries"
            " WHERE event_id = ANY(%s::text[]) GROUP BY event_id, status"
        )
        counts: dict[str, dict[str, int]] = {}
        for event_id, status, n in await self._fetch("count deliveries", query, (list(event_ids),)):
            counts.setdefault(event_id, {})[status] = n
        return counts

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        select = sql.SQL("SELECT {} FROM attempts WHERE delivery_id = %s ORDER BY number")
        query = select.format(q.ATTEMPT_COLS)
        rows = await self._fetch(f"list attempts of {delivery_id}", query, (delivery_id,))
        return [AttemptRecord.from_row(row) for row in rows]

    async def replay(
        self,
        delivery_ids: Collection[str],
        now: float,
        *,
        also: Collection[DeliveryStatus] = (),
    ) -> int:
        query = (
            "UPDATE deliveries"  # noqa: S608 (constants only)
            " SET status = 'pending', next_attempt_at = %(now)s,"
            " lease_until = NULL, attempts = 0, updated_at = %(now)s"
            " WHERE id = ANY(%(ids)s::text[])"
            f" AND status IN ({shared.replayable(also)})"
            " AND (lease_until IS NULL OR lease_until <= %(now)s)"
        )
        return await self._write(
            "replay deliveries", query, {"now": now, "ids": list(delivery_ids)}
        )

    async def queue_stats(self, now: float) -> QueueStats:
        query = sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE {due}),"
            " min(next_attempt_at) FILTER (WHERE {due})"
            " FROM deliveries WHERE status IN ('pending', 'failed')"
        ).format(due=sql.SQL(q.DUE))
        ((total, due, oldest),) = await self._fetch("queue stats", query, {"now": now})
        age = None if oldest is None else now - oldest
        return QueueStats(due=due, pending_total=total, oldest_due_age_s=age)

    async def probe(self) -> None:
        """A pooled connection to a server that takes writes (not a standby, not read-only)."""
        query = sql.SQL(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
        )
        ((read_only,),) = await self._fetch("probe", query, ())
        if read_only:
            raise StoreUnavailableError(f"probe PostgreSQL store {self.url}: it is read-only")

    async def purge(self, older_than: float, *, limit: int = 1000) -> Purged:
        """One short transaction: pick the oldest purgeable events (skipping rows another
        replica's purge holds), lock their deliveries (a replay racing this waits, then finds
        them gone), look again with a fresh snapshot (a replay that committed first keeps its
        event), and delete, counting what goes with each event (ON DELETE CASCADE); then the
        digest batches left empty."""
        async with self._cursor("purge events") as cursor:
            await cursor.execute(q.PURGEABLE, {"before": older_than, "limit": limit})
            ids = [row[0] for row in await cursor.fetchall()]
            if not ids:
                return Purged()
            await cursor.execute(q.LOCK_DELIVERIES, (ids,))
            await cursor.execute(q.PURGE, (ids,))
            row = await cursor.fetchone()
            await cursor.execute(_PURGE_BATCHES, (older_than,))
        return Purged(*row) if row else Purged()

    async def suppressions_for(
        self, addresses: Collection[str], scopes: Collection[str]
    ) -> list[Suppression]:
        if not addresses or not scopes:
            return []
        params = (list(addresses), list(scopes))
        rows = await self._fetch("look up suppressions", _SUPPRESSIONS_FOR, params)
        return [kept.from_row(row) for row in rows]

    async def add_suppression(self, suppression: Suppression) -> bool:
        what = f"suppress {suppression.address}"
        return await self._write(what, _ADD_SUPPRESSION, kept.row(suppression)) > 0

    async def remove_suppressions(self, address: str, scope: str | None = None) -> int:
        params = (address, scope, scope)
        return await self._write(f"unsuppress {address}", _REMOVE_SUPPRESSIONS, params)

    async def list_suppressions(
        self,
        *,
        address: str | None = None,
        scope: str | None = None,
        reason: Reason | None = None,
        limit: int = 100,
    ) -> list[Suppression]:
        clauses, params = kept.filters(address, scope, reason)
        query = sql.SQL(shared.postgres(kept.LIST.format(where=kept.where(clauses))))
        rows = await self._fetch("list suppressions", query, [*params, limit])
        return [kept.from_row(row) for row in rows]


_SUPPRESSIONS_FOR = sql.SQL(
    f"SELECT {kept.COLUMNS} FROM suppressions"  # noqa: S608 (constants only)
    " WHERE address = ANY(%s::text[]) AND scope = ANY(%s::text[])"
)
_ADD_SUPPRESSION = shared.postgres(kept.ADD)
_REMOVE_SUPPRESSIONS = (
    "DELETE FROM suppressions WHERE address = %s AND (%s::text IS NULL OR scope = %s)"
)
_PROMOTE = shared.postgres(shared.PROMOTE.format(skip=" FOR UPDATE SKIP LOCKED"))
_DIGEST_EVENTS = sql.SQL(shared.postgres(shared.DIGEST_EVENTS))
_PURGE_BATCHES = shared.postgres(shared.PURGE_BATCHES)


async def _drive(cursor: _Cursor, writer: admit.Writer) -> IngestResult:
    """Run ``writer`` (``relay.store.admit``) on the cursor, in the caller's transaction."""
    try:
        statement = next(writer)
        while True:
            text, params, many = statement
            if many:
                await cursor.executemany(text, params)
                rows: list[Any] = []
            else:
                await cursor.execute(text, params)
                rows = await cursor.fetchall() if cursor.description is not None else []
            statement = writer.send(rows)
    except StopIteration as done:
        result: IngestResult = done.value
        return result


async def _record_all(
    cursor: _Cursor, batch: Sequence[ResultChange]
) -> list[Recorded | StoreError]:
    """Inside a transaction: what ``PostgresStore._commit_results`` describes. Several results
    for one delivery are applied in turn, each seeing the ones before it."""
    ids = sorted({change.delivery_id for change in batch})
    await cursor.execute(q.ATTEMPT_COUNTS, (ids,))
    found = {row[0]: list(row[1:]) for row in await cursor.fetchall()}
    outcomes: list[Recorded | StoreError] = []
    attempts: list[dict[str, Any]] = []
    updates: list[tuple[Any, ...]] = []
    for change in batch:
        state = found.get(change.delivery_id)  # attempts, last number, lease, status, last error
        try:
            row, update, recorded = change.writes(state)
        except StoreError as exc:
            outcomes.append(exc)
            continue
        assert state is not None
        if row is not None:
            attempts.append(row)
            state[1] = row["number"]
        if update is not None:
            updates.append(update)
            state[0], state[2], state[3], state[4] = update[1], None, update[0], update[3]
        outcomes.append(recorded)
    if attempts:
        await cursor.executemany(q.INSERT_ATTEMPT, attempts)
    if updates:
        await cursor.executemany(q.UPDATE_DELIVERY, updates)
    return outcomes
