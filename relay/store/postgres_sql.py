"""The statements the PostgreSQL store runs, and the helpers that build their parameters.

``relay.store.postgres`` owns the pool, the transactions and the error translation; the SQL it
sends is here, so each statement can be read whole. Parameters travel as ``%s`` or
``%(name)s`` placeholders; the few pieces composed into a statement (filters, column lists) are
constants, through ``psycopg.sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from relay.store.group import PendingIngest
from relay.store.queries import STILL_NEEDED

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS relay_schema (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)"""
SET_VERSION = """INSERT INTO relay_schema (version) VALUES (%s)
    ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version"""
# What the schema relay's tables would go in holds: a schema without relay_schema must be empty.
SCHEMA_OBJECTS = """SELECT current_schema(), CASE c.relkind WHEN 'v' THEN 'view'
    WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'table' END, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    ORDER BY c.relkind NOT IN ('r', 'p', 'f'), 2, 3 LIMIT 50"""
# One schema change at a time per schema: a session lock on a key naming it.
SCHEMA_LOCK = "SELECT pg_advisory_lock(hashtext('relay schema ' || coalesce(current_schema, '')))"

EVENT_COLS = sql.SQL("id, source, message_id, type, received_at, body")
DELIVERY_COLS = sql.SQL(
    "id, event_id, rule, send_index, sink, idempotency_key, status, attempts, next_attempt_at, "
    "lease_until, last_error, created_at, updated_at, delivered_at, cancel_key, batch_id"
)
ATTEMPT_COLS = sql.SQL(
    "id, delivery_id, number, started_at, duration_ms, status_code, error, outcome, rendered"
)
# Retention (see PostgresStore.purge): the oldest events received before a time whose deliveries
# are all final; their deliveries, locked; then, looked at again, the ones still purgeable go.
PURGEABLE = f"""SELECT e.id FROM events e WHERE e.received_at < %(before)s AND NOT {STILL_NEEDED}
ORDER BY e.received_at LIMIT %(limit)s FOR UPDATE OF e SKIP LOCKED"""  # noqa: S608 (constants only)
LOCK_DELIVERIES = "SELECT 1 FROM deliveries WHERE event_id = ANY(%s::text[]) FOR UPDATE"
PURGE = f"""WITH doomed AS (
    SELECT e.id FROM events e WHERE e.id = ANY(%s::text[]) AND NOT {STILL_NEEDED}
), gone AS (
    DELETE FROM events WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT (SELECT count(*) FROM gone),
    (SELECT count(*) FROM deliveries WHERE event_id IN (SELECT id FROM doomed)),
    (SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
        WHERE d.event_id IN (SELECT id FROM doomed))"""  # noqa: S608 (constants only)
DUE = "next_attempt_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)"
CLAIM = """WITH due AS (
    SELECT id FROM deliveries WHERE status IN ('pending', 'failed') AND {due}{only}
    ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d SET lease_until = %(until)s, updated_at = %(now)s FROM due
    WHERE d.id = due.id RETURNING d.*
), closed AS (
    UPDATE batches b SET state = 'closed' FROM claimed c
    WHERE b.id = c.batch_id AND b.state = 'open'
)
SELECT c.id, c.event_id, e.source, e.message_id, e.type, e.received_at, e.body, c.rule,
    c.send_index, c.sink, c.idempotency_key, c.attempts, c.lease_until, c.batch_id
FROM claimed c JOIN events e ON e.id = c.event_id ORDER BY c.next_attempt_at, c.id"""
INGEST = """WITH event AS (
    INSERT INTO events (id, source, message_id, type, received_at, body)
    VALUES (%(id)s, %(source)s, %(message_id)s, %(type)s, %(received_at)s, %(body)s)
    ON CONFLICT (source, message_id) DO NOTHING RETURNING id
), sent AS (
    INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,
        next_attempt_at, created_at, updated_at, cancel_key)
    SELECT d.id, event.id, d.rule, d.send_index, d.sink, d.idempotency_key, d.status, d.due,
        %(received_at)s, %(received_at)s, d.cancel_key
    FROM event, unnest(%(d_ids)s::text[], %(d_rules)s::text[], %(d_sends)s::integer[],
        %(d_sinks)s::text[], %(d_keys)s::text[], %(d_due)s::double precision[],
        %(d_status)s::text[], %(d_cancel)s::text[])
        AS d(id, rule, send_index, sink, idempotency_key, due, status, cancel_key)
    RETURNING 1
)
SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM sent)"""
# A group-commit batch in one statement: the new events (a duplicate, stored before or earlier
# in the batch, inserts nothing) and the deliveries of those inserted; returns their ids.
INGEST_BATCH = """WITH event AS (
    INSERT INTO events (id, source, message_id, type, received_at, body)
    SELECT e.id, e.source, e.message_id, e.type, e.received_at, e.body
    FROM unnest(%(ids)s::text[], %(sources)s::text[], %(message_ids)s::text[],
        %(types)s::text[], %(received)s::double precision[], %(bodies)s::bytea[])
        WITH ORDINALITY AS e(id, source, message_id, type, received_at, body, n)
    ORDER BY e.n
    ON CONFLICT (source, message_id) DO NOTHING RETURNING id, received_at
), sent AS (
    INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,
        next_attempt_at, created_at, updated_at, cancel_key)
    SELECT d.id, event.id, d.rule, d.send_index, d.sink, d.idempotency_key, d.status, d.due,
        event.received_at, event.received_at, d.cancel_key
    FROM event JOIN unnest(%(d_ids)s::text[], %(d_events)s::text[], %(d_rules)s::text[],
        %(d_sends)s::integer[], %(d_sinks)s::text[], %(d_keys)s::text[],
        %(d_due)s::double precision[], %(d_status)s::text[], %(d_cancel)s::text[])
        AS d(id, event_id, rule, send_index, sink, idempotency_key, due, status, cancel_key)
        ON d.event_id = event.id
    RETURNING 1
)
SELECT id FROM event"""


def glob_to_regex(glob: str) -> str:
    """A PostgreSQL regular expression matching what SQLite's GLOB matches: ``*``, ``?`` and
    ``[...]`` classes (``[^...]`` negated, a leading ``]`` literal), case-sensitive, anchored."""
    out, i = ["^"], 0
    while i < len(glob):
        char = glob[i]
        if char == "[":
            end = i + 2 if glob[i + 1 : i + 2] == "^" else i + 1
            end = glob.find("]", end + 1)  # a ] right after [ or [^ is a member
            if end < 0:
                return "(?!)"  # SQLite matches nothing with an unclosed class
            negate = glob[i + 1] == "^"
            members = glob[i + 1 + negate : end]
            escaped = "".join("\\" + c if c in "\\[]" else c for c in members)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end + 1
            continue
        out.append(
            {"*": ".*", "?": "."}.get(char) or ("\\" + char if char in "\\^$.|+(){}" else char)
        )
        i += 1
    return "".join(out) + "$"


def where(filters: dict[str, Any]) -> tuple[sql.Composed, list[Any]]:
    """The WHERE clause of the filters (constant SQL with one %s each) whose value is given."""
    given = {clause: value for clause, value in filters.items() if value is not None}
    if not given:
        return sql.Composed([]), []
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(map(sql.SQL, given)), list(given.values())


# The delivery's attempts in its current retry budget (reset by a replay), the number of the
# last attempt recorded for it ever (attempt numbers keep counting across replays), and its lease.
# For a batch of results: each delivery's id first, the rows locked in id order (so that two
# replicas' batches take their locks in the same order: no deadlock).
ATTEMPT_COUNTS = (
    "SELECT d.id, d.attempts, COALESCE((SELECT MAX(a.number) FROM attempts a"
    " WHERE a.delivery_id = d.id), 0), d.lease_until, d.status, d.last_error FROM deliveries d"
    " WHERE d.id = ANY(%s::text[]) ORDER BY d.id FOR UPDATE OF d"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
    " outcome, rendered) VALUES (%(delivery_id)s, %(number)s, %(started_at)s, %(duration_ms)s,"
    " %(status_code)s, %(error)s, %(outcome)s, %(rendered)s)"
)
# The parameters of ResultChange.delivery_update.
UPDATE_DELIVERY = (
    "UPDATE deliveries SET status = %s, attempts = %s, lease_until = NULL,"
    " next_attempt_at = COALESCE(%s::double precision, next_attempt_at), last_error = %s,"
    " updated_at = %s, delivered_at = COALESCE(%s::double precision, delivered_at) WHERE id = %s"
)
# As SQLite's: the last two parameters are the lease twice, or NULL twice (ResultChange.holds).
RELEASE = (
    "UPDATE deliveries SET lease_until = NULL WHERE id = ANY(%s::text[])"
    " AND (%s::double precision IS NULL OR lease_until = %s)"
)
DEFER = (
    "UPDATE deliveries SET lease_until = NULL, next_attempt_at = %s, status = CASE WHEN %s"
    " AND status IN ('pending', 'failed') THEN 'scheduled' ELSE status END WHERE id = %s"
    " AND (%s::double precision IS NULL OR lease_until = %s)"
)


def delivery_arrays(items: Sequence[PendingIngest]) -> dict[str, list[Any]]:
    """The deliveries of ``items`` as the column arrays the ingest statements ``unnest``."""
    pairs = [(item.event.id, d) for item in items for d in item.deliveries]
    return {
        "d_ids": [d.id for _, d in pairs],
        "d_events": [event_id for event_id, _ in pairs],
        "d_rules": [d.rule for _, d in pairs],
        "d_sends": [d.send_index for _, d in pairs],
        "d_sinks": [d.sink for _, d in pairs],
        "d_keys": [d.idempotency_key for _, d in pairs],
        "d_due": [d.next_attempt_at for _, d in pairs],
        "d_status": [d.status.value for _, d in pairs],
        "d_cancel": [d.cancel_key for _, d in pairs],
    }


async def schema_version(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> int:
    """The schema version recorded in the database; 0 when there is no relay schema."""
    cursor = await conn.execute("SELECT to_regclass('relay_schema') IS NOT NULL")
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return 0
    cursor = await conn.execute("SELECT version FROM relay_schema")
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])
