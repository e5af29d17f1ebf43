"""The suppression list's statements (``relay.recipients``), the same on both backends: written
with ``?`` placeholders (SQLite's; ``queries.postgres`` spells them for PostgreSQL), and its rows.

The worker's lookup probes the primary key (address, scope) once per address and scope it asks
about; listing walks ``suppressions_newest``. Nothing here is on ingest's path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.recipients.addresses import Reason, Suppression

COLUMNS = "address, scope, reason, event_id, created_at"
ADD = (
    f"INSERT INTO suppressions ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608 (constants only)
    " ON CONFLICT (address, scope) DO NOTHING"
)
REMOVE = "DELETE FROM suppressions WHERE address = ? AND (? IS NULL OR scope = ?)"
LIST = (
    f"SELECT {COLUMNS} FROM suppressions{{where}} ORDER BY created_at DESC, address, scope LIMIT ?"  # noqa: S608 (constants only)
)


def lookup(addresses: int, scopes: int) -> str:
    """SQLite's lookup of ``addresses`` addresses in ``scopes`` scopes: a search of the primary
    key per pair (PostgreSQL's, with arrays, is in ``relay.store.postgres``)."""
    return (
        f"SELECT {COLUMNS} FROM suppressions"  # noqa: S608 (placeholders only)
        f" WHERE address IN ({', '.join('?' * addresses)}) AND scope IN ({', '.join('?' * scopes)})"
    )


def row(suppression: Suppression) -> tuple[Any, ...]:
    s = suppression
    return (s.address, s.scope, s.reason.value, s.event_id, s.created_at)


def from_row(values: Sequence[Any]) -> Suppression:
    address, scope, reason, event_id, created_at = values
    return Suppression(address, scope, Reason(reason), event_id, float(created_at))


def filters(
    address: str | None, scope: str | None, reason: Reason | None
) -> tuple[list[str], list[Any]]:
    """The clauses (``?`` placeholders) and parameters of the filters given."""
    given = {"address = ?": address, "scope = ?": scope, "reason = ?": reason}
    chosen = {clause: value for clause, value in given.items() if value is not None}
    values = [v.value if isinstance(v, Reason) else v for v in chosen.values()]
    return list(chosen), values


def where(clauses: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""
