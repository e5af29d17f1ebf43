"""How the ops commands print: tables for people, ``--json`` for scripts, and times.

Tables are left-aligned, the last column cut to the terminal's width (nothing cut when stdout is not
a terminal), times in UTC, most with how long ago (``3m ago``). ``--json`` holds every field of a
record but its raw body and an attempt's stored render (``relay explain`` shows it), times as UTC
ISO-8601 with milliseconds. ``parse_since`` and ``positive`` are the argparse types of ``--since``
and ``--limit``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from relay.config.durations import UNITS, parse_duration
from relay.store.base import DeliveryRecord, DeliveryStatus, EventRecord

# the most deliveries one query selects: a bulk replay's (run it again for the rest), an event's
BULK_LIMIT = 100_000
DELIVERY_HEADERS = ("ID", "EVENT", "RULE", "SINK", "STATUS", "ATTEMPTS", "UPDATED", "LAST ERROR")
ATTEMPT_HEADERS = ("#", "TIME", "DURATION MS", "HTTP", "OUTCOME", "ERROR")


def parse_since(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``2d``, ``1w`` ago, or an ISO-8601 time (UTC unless it says)."""
    with contextlib.suppress(ValueError):
        return time.time() - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a duration (30s, 15m, 1h, 2d) nor an ISO-8601 time "
            "(2024-05-01T12:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def positive(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def iso(ts: float | None, *, ms: bool = False) -> str | None:
    """``2024-05-01T12:00:00Z`` (with milliseconds if ``ms``); None stays None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds" if ms else "seconds")
    return moment.replace("+00:00", "Z")


def when(ts: float | None, now: float) -> str:
    """``2024-05-01T12:00:00Z (3m ago)`` or ``... (in 5m)``."""
    if ts is None:
        return "-"
    span = abs(now - ts)
    unit = next((u for u in "dhm" if span >= UNITS[u]), "s")
    hint = f"{int(span // UNITS[unit])}{unit}"
    return f"{iso(ts)} ({hint} ago)" if now >= ts else f"{iso(ts)} (in {hint})"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None, indent: str = ""
) -> list[str]:
    """Left-aligned columns; given a ``width`` (a terminal), the last column is cut to fit."""
    cells = [list(headers)] + [[c.replace("\n", " ") for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is not None:
        room = max(width - len(indent) - sum(widths[:-1]) - 2 * (len(widths) - 1), 20)
        for row in cells:
            row[-1] = row[-1] if len(row[-1]) <= room else row[-1][: room - 3] + "..."
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def term_width() -> int | None:
    """The terminal's width in columns; None when stdout is not a terminal (nothing is cut)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def emit(lines: Sequence[str], empty: str = "") -> None:
    """Print ``lines``, or ``empty`` when there are none."""
    print("\n".join(lines) if lines else empty)


def record_json(record: Any, **extra: Any) -> dict[str, Any]:
    """A record's fields for --json: times as UTC ISO-8601 with milliseconds, no raw body."""
    fields = asdict(record)
    fields.pop("body", None)
    fields.pop("rendered", None)  # what an attempt sent: `relay explain` shows it
    for key in [k for k in fields if k.endswith(("_at", "_until"))]:
        fields[key] = iso(fields[key], ms=True)
    return {**fields, **extra}


def delivery_json(d: DeliveryRecord, **extra: Any) -> dict[str, Any]:
    """A delivery for --json; ``next_attempt_at`` only while it waits for one."""
    return {**record_json(d, **extra), **({} if waiting(d) else {"next_attempt_at": None})}


def waiting(d: DeliveryRecord) -> bool:
    """Whether the delivery waits for an attempt (its ``next_attempt_at`` means something)."""
    return d.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.SCHEDULED)


def status_cell(d: DeliveryRecord, now: float) -> str:
    """The status, with when a scheduled one is due: ``scheduled (in 3d)``."""
    if d.status is DeliveryStatus.SCHEDULED:
        return f"scheduled ({when(d.next_attempt_at, now).partition(' (')[2].rstrip(')')})"
    return d.status


def event_body(event: EventRecord) -> Any:
    """The stored body as JSON to print; as its text when it is not JSON, or nested deeper than
    printing JSON goes."""
    try:
        return json.loads(event.body)
    except (ValueError, RecursionError):
        return event.body.decode("utf-8", "replace")


def dump(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def delivery_rows(rows: Sequence[DeliveryRecord], now: float) -> list[list[str]]:
    """Deliveries as rows under ``DELIVERY_HEADERS``."""
    return [[d.id, d.event_id, d.rule, d.sink, status_cell(d, now), str(d.attempts),
             when(d.updated_at, now), d.last_error or ""] for d in rows]  # fmt: skip
