"""What the delivery-log and replay command tests share: a real SQLite file seeded at a fixed
clock, and the commands run in-process against it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from relay.cli import main
from relay.store import Attempt, DeliveryRecord, NewDelivery, NewEvent, SQLiteStore

T = TypeVar("T")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()  # the fixed data's clock


def at_store(db: Path, work: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Run ``work`` on an opened store of ``db`` (as another process would)."""

    async def run() -> T:
        store = SQLiteStore(db)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def ingest(
    store: SQLiteStore, n: int, type: str, at: float, sends: list[tuple[str, str]]
) -> None:
    """Event ``evt_<n>`` (svix id ``msg_<n>``) with one delivery ``dlv_<n><a, b, ...>`` per
    (rule, sink) in ``sends``."""
    body = json.dumps({"type": type, "data": {"id": f"user_{n}"}}).encode()
    event = NewEvent(f"evt_{n}", "clerk", f"msg_{n}", type, at, body)
    deliveries = [
        NewDelivery(f"dlv_{n}{'abcdef'[i]}", rule, 0, sink, f"key-{n}-{i}", at)
        for i, (rule, sink) in enumerate(sends)
    ]
    await store.ingest(event, deliveries)


def tried(dlv: str, at: float, ms: float, code: int | None, error: str | None) -> Attempt:
    return Attempt(dlv, started_at=at, duration_ms=ms, status_code=code, error=error)


def run(db: Path, *args: str) -> int:
    return main([*args, "--database", str(db)])


def deliveries(db: Path, **filters: Any) -> dict[str, DeliveryRecord]:
    rows = at_store(db, lambda s: s.list_deliveries(limit=1000, **filters))
    return {d.id: d for d in rows}


class Terminal(io.StringIO):
    """A stdin that is a terminal, holding what the person types."""

    def isatty(self) -> bool:
        return True
