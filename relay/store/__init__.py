"""The durable store: events, deliveries and attempts behind one narrow interface."""

from pathlib import Path

from relay.store.base import (
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryRecord,
    DeliveryStatus,
    EventRecord,
    IngestOutcome,
    NewDelivery,
    NewEvent,
    QueueStats,
    Store,
)
from relay.store.sqlite import SQLiteStore

__all__ = [
    "Attempt",
    "AttemptRecord",
    "ClaimedDelivery",
    "DeliveryRecord",
    "DeliveryStatus",
    "EventRecord",
    "IngestOutcome",
    "NewDelivery",
    "NewEvent",
    "QueueStats",
    "SQLiteStore",
    "Store",
    "open_store",
]


def open_store(url: str) -> Store:
    """The (not yet opened) store a database URL names; ``await store.open()`` before use.

    ``sqlite:///relay.db`` is relative to the working directory, ``sqlite:////var/lib/relay.db``
    absolute; a URL without a scheme is a file path. Any other scheme is a ValueError whose text
    names only the scheme (a URL may hold a password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        path = url
    elif scheme == "sqlite":
        if not rest.startswith("/"):
            raise ValueError("a sqlite URL has no host: write sqlite:///relative or sqlite:////abs")
        path = rest[1:]
    else:
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}: use sqlite:///path/to/relay.db or a path"
        )
    if not path or path == ":memory:":
        raise ValueError("the store needs a file path, e.g. sqlite:///relay.db")
    return SQLiteStore(Path(path))
