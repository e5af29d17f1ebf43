"""The durable store: events, deliveries and attempts, behind a contract narrow by caller
(``relay.store.base``: ``Queue`` for ingest and the worker, ``DeliveryLog`` for the CLI and
metrics). ``open_store`` picks the backend a database URL names."""

from pathlib import Path

from relay.store.base import (
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryLog,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    IngestOutcome,
    NewDelivery,
    NewEvent,
    Purged,
    Queue,
    QueueStats,
    Recorded,
    Store,
)
from relay.store.sqlite import SQLiteStore
from relay.store.sqlite_space import RESERVE_BYTES

__all__ = [
    "Attempt",
    "AttemptRecord",
    "ClaimedDelivery",
    "DeliveryLog",
    "DeliveryRecord",
    "DeliveryStatus",
    "EventRecord",
    "IngestOutcome",
    "NewDelivery",
    "NewEvent",
    "Purged",
    "Queue",
    "QueueStats",
    "Recorded",
    "SQLiteStore",
    "Store",
    "open_store",
    "redact_url",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(url: str) -> Store:
    """The (not yet opened) store a database URL names; ``await store.open()`` before use.

    ``sqlite:///relay.db`` is relative to the working directory, ``sqlite:////var/lib/relay.db``
    absolute; a URL without a scheme is a file path. ``postgresql://`` and ``postgres://`` URLs
    (libpq's syntax) name a PostgreSQL store; psycopg is imported only then. Any other scheme is a
    ValueError whose text names only the scheme (a URL may hold a password). A SQLite store keeps
    a reserve of disk when it serves (``relay.store.sqlite_space``).
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in POSTGRES_SCHEMES:
        from relay.store.postgres import PostgresStore

        return PostgresStore(url)
    if not sep:
        path = url
    elif scheme == "sqlite":
        if not rest.startswith("/"):
            raise ValueError("a sqlite URL has no host: write sqlite:///relative or sqlite:////abs")
        path = rest[1:]
    else:
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}: use sqlite:///path/to/relay.db, a path or "
            "postgresql://user:password@host/dbname"
        )
    if not path or path == ":memory:":
        raise ValueError("the store needs a file path, e.g. sqlite:///relay.db")
    return SQLiteStore(Path(path), disk_reserve_bytes=RESERVE_BYTES)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) shown as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, q, query = rest.partition("?")
    user, at, host = head.rpartition("@")  # the last @: a password may hold an unescaped one
    if at and ":" in user:
        head = f"{user.partition(':')[0]}:***@{host}"
    params = (p.partition("=") for p in query.split("&"))
    query = "&".join(k + e + ("***" if k.lower() == "password" else v) for k, e, v in params)
    return f"{scheme}{sep}{head}{q}{query}"
