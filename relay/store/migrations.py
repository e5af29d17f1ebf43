"""Schema versions, the same rules for every backend.

Each backend lists its migrations: step ``i`` takes a database from version ``i`` to ``i + 1``, so
the version the code needs is the number of steps, and version 0 means "no relay schema here"
(SQLite keeps the version in ``PRAGMA user_version``, PostgreSQL in the ``relay_schema`` table).
What a store does with the version it finds when it opens::

    found == needed               nothing to do
    found == 0 and create         apply every step (a new, empty database)
    found < needed and upgrade    apply the missing steps (``relay db upgrade``, ``upgrade()``)
    found < needed otherwise      StoreError: "... run `relay db upgrade`"
    found > needed                StoreError: written by a newer relay, never touched

A store applies its steps and records the new version in one transaction, under a lock that makes
concurrent openers wait and then find the work done.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from relay.errors import StoreError

UPGRADE_HINT = "run `relay db upgrade`"
Steps = tuple[tuple[str, ...], ...]  # step i: the statements that take version i to i + 1

# Version 3 drops indexes that every ingest paid for but only CLI filters used (sink, rule,
# status, sender message id). Listing deliveries, filtered or not, now walks one index in exactly
# the order shown (newest first, then id) and stops at the limit; a lookup by sender message id
# probes the unique (source, message_id) index once per source (EVENT_SOURCES). Dead deliveries,
# the ones ops look for, get a partial index that ingest never writes.
LISTING_INDEXES = (
    "CREATE INDEX deliveries_newest ON deliveries (created_at DESC, id)",
    "CREATE INDEX deliveries_dead ON deliveries (created_at DESC, id) WHERE status = 'dead'",
)

# The distinct sources of stored events, found by one seek per source in the unique (source,
# message_id) index (a loose index scan: neither backend does it on its own). Same SQL on both.
EVENT_SOURCES = (
    "WITH RECURSIVE s (source) AS (SELECT MIN(source) FROM events UNION ALL"
    " SELECT (SELECT MIN(e.source) FROM events e WHERE e.source > s.source) FROM s"
    " WHERE s.source IS NOT NULL) SELECT source FROM s WHERE source IS NOT NULL"
)

# Version 4: workflows (delays, send windows, cancels, digests, once/throttle; relay.store.steps).
# Deliveries get four more statuses and two columns: cancel_key (what a cancelling event of its
# rule must match) and batch_id (its digest batch); both are NULL for a plain delivery, so the
# partial indexes on them cost a plain ingest nothing. A scheduled delivery is outside the claim
# index until promote_due makes it pending: the claims, and the queue statistics that count the
# claim index, never walk the future (a million deliveries due in three days). Digests are
# batches, one open row per (rule, digest key) by a unique partial index; once/throttle keep the
# sends taken per (rule, key) in rule_limits.
STATUSES = (
    "'pending', 'failed', 'delivered', 'dead', 'scheduled', 'cancelled', 'suppressed', 'batched'"
)
WORKFLOW_INDEXES = (
    """CREATE INDEX deliveries_scheduled ON deliveries (next_attempt_at, id)
        WHERE status = 'scheduled'""",
    """CREATE INDEX deliveries_cancel_key ON deliveries (rule, cancel_key)
        WHERE cancel_key IS NOT NULL""",
    "CREATE INDEX deliveries_batch ON deliveries (batch_id) WHERE batch_id IS NOT NULL",
    "CREATE UNIQUE INDEX batches_open ON batches (rule, digest_key) WHERE state = 'open'",
)
_V3_DELIVERY_COLUMNS = (
    "id, event_id, rule, send_index, sink, idempotency_key, status, attempts, next_attempt_at,"
    " lease_until, last_error, created_at, updated_at, delivered_at"
)

# Version 6: the suppression list (relay.recipients): one row per (address, scope), its primary
# key the probe the worker makes before each email; a newest-first index for `relay suppressions
# list`. Rows are written only by bounces, complaints, unsubscribes and ops: never by ingest.
REASONS = "'bounced', 'complained', 'unsubscribed', 'manual'"
SUPPRESSIONS_NEWEST = (
    "CREATE INDEX suppressions_newest ON suppressions (created_at DESC, address, scope)"
)

# Every schema change is a new step appended to each backend (a released step is never edited),
# with a test that upgrades a database of the previous version.
SQLITE_STEPS: Steps = (
    (  # 1: the first schema
        """CREATE TABLE IF NOT EXISTS events (
            id TEXT PRIMARY KEY, source TEXT NOT NULL, message_id TEXT NOT NULL,
            type TEXT NOT NULL, received_at REAL NOT NULL, body BLOB NOT NULL,
            UNIQUE (source, message_id))""",
        "CREATE INDEX IF NOT EXISTS events_message_id ON events (message_id)",
        "CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at)",
        """CREATE TABLE IF NOT EXISTS deliveries (
            id TEXT PRIMARY KEY,
            event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            rule TEXT NOT NULL, send_index INTEGER NOT NULL, sink TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'failed', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
            lease_until REAL, last_error TEXT, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, delivered_at REAL)""",
        "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id)",
        "CREATE INDEX IF NOT EXISTS deliveries_sink ON deliveries (sink, created_at)",
        "CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries (rule, created_at)",
        "CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at)",
        """CREATE TABLE IF NOT EXISTS attempts (
            id INTEGER PRIMARY KEY,
            delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            number INTEGER NOT NULL, started_at REAL NOT NULL, duration_ms REAL NOT NULL,
            status_code INTEGER, error TEXT, outcome TEXT NOT NULL,
            UNIQUE (delivery_id, number))""",
    ),
    (  # 2: claims read the due deliveries of one sink in order, without sorting the backlog
        """CREATE INDEX IF NOT EXISTS deliveries_claimable ON deliveries (sink, next_attempt_at, id)
            WHERE status IN ('pending', 'failed')""",
    ),
    (  # 3: fewer indexes for every ingest to write (see LISTING_INDEXES)
        "DROP INDEX IF EXISTS deliveries_due",  # claims use deliveries_claimable
        "DROP INDEX IF EXISTS deliveries_sink",
        "DROP INDEX IF EXISTS deliveries_rule",
        "DROP INDEX IF EXISTS deliveries_created",
        "DROP INDEX IF EXISTS events_message_id",
        *LISTING_INDEXES,
    ),
    (  # 4: workflows. SQLite cannot alter a CHECK: the deliveries table is rebuilt (_migrate
        # turns foreign keys off around the migration, so dropping the old table leaves the
        # attempts, which name the table, to the new one) with its indexes, then the new tables.
        f"""CREATE TABLE deliveries_v4 (
            id TEXT PRIMARY KEY,
            event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            rule TEXT NOT NULL, send_index INTEGER NOT NULL, sink TEXT NOT NULL,
            idempotency_key TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ({STATUSES})),
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
            lease_until REAL, last_error TEXT, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, delivered_at REAL, cancel_key TEXT, batch_id TEXT)""",
        f"INSERT INTO deliveries_v4 ({_V3_DELIVERY_COLUMNS})"  # noqa: S608 (constants only)
        f" SELECT {_V3_DELIVERY_COLUMNS} FROM deliveries",
        "DROP TABLE deliveries",
        "ALTER TABLE deliveries_v4 RENAME TO deliveries",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
        """CREATE INDEX deliveries_claimable ON deliveries (sink, next_attempt_at, id)
            WHERE status IN ('pending', 'failed')""",
        *LISTING_INDEXES,
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY, rule TEXT NOT NULL, digest_key TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
            opened_at REAL NOT NULL, closes_at REAL NOT NULL,
            members INTEGER NOT NULL, max_members INTEGER NOT NULL)""",
        """CREATE TABLE rule_limits (
            rule TEXT NOT NULL, limit_key TEXT NOT NULL, sent_at TEXT NOT NULL,
            PRIMARY KEY (rule, limit_key))""",
        *WORKFLOW_INDEXES,
    ),
    (  # 5: what each attempt rendered and sent, for `relay explain` (relay.delivery.snapshot)
        "ALTER TABLE attempts ADD COLUMN rendered TEXT",
    ),
    (  # 6: the suppression list (see SUPPRESSIONS_NEWEST)
        f"""CREATE TABLE suppressions (
            address TEXT NOT NULL, scope TEXT NOT NULL,
            reason TEXT NOT NULL CHECK (reason IN ({REASONS})),
            event_id TEXT, created_at REAL NOT NULL,
            PRIMARY KEY (address, scope)) WITHOUT ROWID""",
        SUPPRESSIONS_NEWEST,
    ),
)

POSTGRES_STEPS: Steps = (
    (  # 1: the first schema; text in the "C" collation to compare bytes as SQLite does
        """CREATE TABLE events (
            id text COLLATE "C" PRIMARY KEY, source text COLLATE "C" NOT NULL,
            message_id text COLLATE "C" NOT NULL, type text COLLATE "C" NOT NULL,
            received_at double precision NOT NULL, body bytea NOT NULL,
            UNIQUE (source, message_id))""",
        "CREATE INDEX events_message_id ON events (message_id)",
        "CREATE INDEX events_received_at ON events (received_at)",
        """CREATE TABLE deliveries (
            id text COLLATE "C" PRIMARY KEY,
            event_id text COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            rule text COLLATE "C" NOT NULL, send_index integer NOT NULL,
            sink text COLLATE "C" NOT NULL, idempotency_key text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'failed', 'delivered', 'dead')),
            attempts integer NOT NULL DEFAULT 0, next_attempt_at double precision NOT NULL,
            lease_until double precision, last_error text, created_at double precision NOT NULL,
            updated_at double precision NOT NULL, delivered_at double precision)""",
        """CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id)
            WHERE status IN ('pending', 'failed')""",
        "CREATE INDEX deliveries_event ON deliveries (event_id)",
        "CREATE INDEX deliveries_sink ON deliveries (sink, created_at)",
        "CREATE INDEX deliveries_rule ON deliveries (rule, created_at)",
        "CREATE INDEX deliveries_created ON deliveries (created_at)",
        """CREATE TABLE attempts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id text COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            number integer NOT NULL, started_at double precision NOT NULL,
            duration_ms double precision NOT NULL, status_code integer, error text,
            outcome text NOT NULL, UNIQUE (delivery_id, number))""",
    ),
    (  # 2: claims read the due deliveries of one sink in order
        """CREATE INDEX deliveries_claimable ON deliveries (sink, next_attempt_at, id)
            WHERE status IN ('pending', 'failed')""",
    ),
    (  # 3: fewer indexes for every ingest to write (see LISTING_INDEXES)
        "DROP INDEX deliveries_sink",
        "DROP INDEX deliveries_rule",
        "DROP INDEX deliveries_created",
        "DROP INDEX events_message_id",
        *LISTING_INDEXES,
    ),
    (  # 4: workflows (see WORKFLOW_INDEXES)
        "ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check",
        "ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check"
        f" CHECK (status IN ({STATUSES}))",
        'ALTER TABLE deliveries ADD COLUMN cancel_key text COLLATE "C",'
        ' ADD COLUMN batch_id text COLLATE "C"',
        """CREATE TABLE batches (
            id text COLLATE "C" PRIMARY KEY, rule text COLLATE "C" NOT NULL,
            digest_key text COLLATE "C" NOT NULL,
            state text NOT NULL CHECK (state IN ('open', 'closed')),
            opened_at double precision NOT NULL, closes_at double precision NOT NULL,
            members integer NOT NULL, max_members integer NOT NULL)""",
        """CREATE TABLE rule_limits (
            rule text COLLATE "C" NOT NULL, limit_key text COLLATE "C" NOT NULL,
            sent_at text NOT NULL, PRIMARY KEY (rule, limit_key))""",
        *WORKFLOW_INDEXES,
    ),
    (  # 5: what each attempt rendered and sent, for `relay explain` (relay.delivery.snapshot)
        "ALTER TABLE attempts ADD COLUMN rendered text",
    ),
    (  # 6: the suppression list (see SUPPRESSIONS_NEWEST)
        f"""CREATE TABLE suppressions (
            address text COLLATE "C" NOT NULL, scope text COLLATE "C" NOT NULL,
            reason text NOT NULL CHECK (reason IN ({REASONS})),
            event_id text COLLATE "C", created_at double precision NOT NULL,
            PRIMARY KEY (address, scope))""",
        SUPPRESSIONS_NEWEST,
    ),
)


def plan(found: int, needed: int, *, create: bool, upgrade: bool, what: str) -> range:
    """The steps to apply (indexes into the backend's migrations), or a StoreError.

    ``what`` prefixes the error, e.g. ``open SQLite store relay.db``."""
    if found > needed:
        raise StoreError(
            f"{what}: schema version {found} is newer than {needed}: it was written by a newer "
            "relay; run that version"
        )
    if found == needed:
        return range(0)
    if upgrade or (create and found == 0):
        return range(found, needed)
    raise StoreError(
        f"{what}: database schema is version {found}, relay needs {needed}: {UPGRADE_HINT}"
    )


@runtime_checkable
class Upgradable(Protocol):
    """A store whose schema can be created or upgraded on demand (every built-in store)."""

    async def upgrade(self) -> tuple[int, int]:
        """Bring the schema to the version this code needs; returns (from, to) versions."""
        ...
