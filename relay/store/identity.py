"""Whose database is this: relay's own, a new one, or another application's, decided by reading
before anything is written (no WAL switch, no table, no version), and whether it is intact.

A SQLite file relay creates carries ``APPLICATION_ID`` in its header (``PRAGMA application_id``,
set in the transaction that creates the schema). A file without it is relay's if it holds relay's
tables and a schema version (relay made it before it set the id, and sets it the next time it
upgrades or serves it); an empty file is new. Anything else belongs to someone else and is
refused, naming what is in it. A PostgreSQL schema without ``relay_schema`` must be empty for
relay to create its tables there.

``quick_check`` finds a damaged SQLite file at start, rather than every poll of the worker
failing on the page that is broken.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from relay.errors import StoreError

APPLICATION_ID = 0x524C4159  # "RLAY"
RELAY_TABLES = frozenset({"events", "deliveries", "attempts"})
SHOWN = 5  # names listed in an error at most
_OBJECTS = (
    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    " ORDER BY type != 'table', type, name"
)
_HINT = (
    "relay never writes to another application's database: point RELAY_DATABASE_URL at a new"
    " file of its own"
)


def sqlite_version(conn: sqlite3.Connection, what: str) -> int:
    """The relay schema version of an open SQLite file (0: a new, empty one), read without
    writing; a StoreError saying what the file is when it is not relay's."""
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if application_id == APPLICATION_ID:
        return int(version)
    if application_id != 0:
        raise StoreError(
            f"{what}: not a relay database: its header names another application"
            f" (application_id {application_id:#x}); {_HINT}"
        )
    objects = conn.execute(_OBJECTS).fetchall()
    tables = {name for kind, name in objects if kind == "table"}
    if not objects and version == 0:
        return 0
    if tables >= RELAY_TABLES and version >= 1:  # made by a relay that set no application_id
        return int(version)
    held = describe([(str(kind), str(name)) for kind, name in objects]) or "no tables"
    raise StoreError(
        f"{what}: not a relay database: it holds {held}"
        f"{f' (user_version {version})' if version else ''}; {_HINT}"
    )


def describe(objects: Sequence[tuple[str, str]]) -> str:
    """``tables a, b; view c`` for (kind, name) pairs: the first few names of each kind."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in objects:
        by_kind.setdefault(kind, []).append(name)
    parts = []
    for kind, names in by_kind.items():
        shown = ", ".join(names[:SHOWN]) + (
            f" (+{len(names) - SHOWN} more)" if names[SHOWN:] else ""
        )
        plural = ("es" if kind.endswith("x") else "s") if len(names) > 1 else ""
        parts.append(f"{kind}{plural} {shown}")
    return "; ".join(parts)


def quick_check(conn: sqlite3.Connection, what: str) -> None:
    """``PRAGMA quick_check``, or a StoreError with what it found: the file is damaged."""
    rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    found = [" ".join(str(row[0]).split()) for row in rows]  # one line
    if found != ["ok"]:
        raise StoreError(
            f"{what}: the database file is damaged (quick_check: {'; '.join(found)}): restore"
            " it from a backup, or recover what is readable with `sqlite3 FILE .recover`"
        )


def postgres_refusal(schema: str | None, objects: Sequence[tuple[str, str]], what: str) -> None:
    """A StoreError if the PostgreSQL schema relay would create its tables in holds anything
    (``objects``: (kind, name) pairs) but has no ``relay_schema``. One that has it was created by
    a replica starting at the same time: the caller looks again under the schema lock."""
    if objects and ("table", "relay_schema") not in objects:
        raise StoreError(
            f"{what}: not a relay database: schema {schema} holds {describe(objects)}, and no"
            " relay_schema; relay creates its tables only in an empty database or schema (give"
            " it one of its own, e.g. options=-csearch_path%3Drelay in the URL)"
        )
