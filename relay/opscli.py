"""Ops commands over the delivery log: ``events``, ``event``, ``deliveries`` and ``replay``.

They read (and replay writes) the same store ``relay serve`` writes, while it runs: SQLite in WAL
mode allows another process. Each command opens the store, queries, prints and closes; none
creates a database. Tables are for people (errors cut to the terminal's width); ``--json`` output
is for scripts and holds everything, times as UTC ISO-8601.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from relay.errors import StoreError
from relay.settings import Settings
from relay.store import SQLiteStore, open_store
from relay.store.base import DeliveryRecord, DeliveryStatus, EventRecord, Store

Job = Callable[[Store, argparse.Namespace], Awaitable[int]]
BULK_LIMIT = 100_000  # deliveries one bulk replay selects; run it again for the rest
CHUNK = 500  # delivery ids per replay transaction
SAMPLE = 10  # rows shown before a bulk replay asks
PROGRESS_OVER = 100  # a bulk replay of more shows a progress bar (on a terminal)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DELIVERY_HEADERS = ("ID", "EVENT", "RULE", "SINK", "STATUS", "ATTEMPTS", "UPDATED", "LAST ERROR")
ATTEMPT_HEADERS = ("#", "TIME", "DURATION MS", "HTTP", "OUTCOME", "ERROR")
REPLAY_NOTE = (
    "Replayed deliveries are due at once; a running `relay serve` sends them. Each keeps its "
    "idempotency key (Resend drops a second send of the same key within 24 h, so an email that "
    "did go out is not sent twice) and its attempt history, and gets a fresh retry budget (its "
    "sink's retry.max_attempts); the ATTEMPTS column counts attempts since the last replay."
)


def parse_since(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``2d``, ``1w`` ago, or an ISO-8601 time (UTC unless it says)."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        return time.time() - float(found[1]) * _UNITS[found[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a duration (30s, 15m, 1h, 2d) nor an ISO-8601 time "
            "(2024-05-01T12:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _positive(text: str) -> int:
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
    unit = next((u for u in "dhm" if span >= _UNITS[u]), "s")
    hint = f"{int(span // _UNITS[unit])}{unit}"
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


def _width() -> int | None:
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _print(lines: Sequence[str], empty: str = "") -> None:
    print("\n".join(lines) if lines else empty)


def _fail(message: str, code: int = 1) -> int:
    print(f"relay: {message}", file=sys.stderr)
    return code


def _json(record: Any, **extra: Any) -> dict[str, Any]:
    """A record's fields for --json: times as UTC ISO-8601 with milliseconds, no raw body."""
    fields = asdict(record)
    fields.pop("body", None)
    for key in [k for k in fields if k.endswith(("_at", "_until"))]:
        fields[key] = iso(fields[key], ms=True)
    return {**fields, **extra}


def _delivery_json(d: DeliveryRecord, **extra: Any) -> dict[str, Any]:
    """A delivery for --json; ``next_attempt_at`` only while it waits for one."""
    return {**_json(d, **extra), **({} if _waiting(d) else {"next_attempt_at": None})}


def _waiting(d: DeliveryRecord) -> bool:
    return d.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


def _body(event: EventRecord) -> Any:
    try:
        return json.loads(event.body)
    except ValueError:
        return event.body.decode("utf-8", "replace")


def _dump(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _delivery_rows(rows: Sequence[DeliveryRecord], now: float) -> list[list[str]]:
    return [[d.id, d.event_id, d.rule, d.sink, d.status, str(d.attempts), when(d.updated_at, now),
             d.last_error or ""] for d in rows]  # fmt: skip


async def show_events(store: Store, args: argparse.Namespace) -> int:
    events = await store.list_events(type_glob=args.type, since=args.since, limit=args.limit)
    counts = [
        Counter(d.status.value for d in await store.list_deliveries(event_id=e.id, limit=1000))
        for e in events
    ]
    if args.json:
        _dump([_json(e, deliveries=dict(c)) for e, c in zip(events, counts, strict=True)])
        return 0
    now = time.time()
    rows = [[e.id, e.type, e.source, e.message_id, when(e.received_at, now),
             ", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "no rule matched"]
            for e, c in zip(events, counts, strict=True)]  # fmt: skip
    headers = ("ID", "TYPE", "SOURCE", "SVIX ID", "RECEIVED", "DELIVERIES")
    _print(table(headers, rows, width=_width()) if rows else [], "no events")
    return 0


async def show_event(store: Store, args: argparse.Namespace) -> int:
    event = await store.get_event(args.id)
    if event is None:
        return _fail(f"no event {args.id}")
    deliveries = await store.list_deliveries(event_id=event.id, limit=BULK_LIMIT)
    deliveries.sort(key=lambda d: (d.rule, d.send_index, d.sink))
    attempts = {d.id: await store.list_attempts(d.id) for d in deliveries}
    rules = list(dict.fromkeys(d.rule for d in deliveries))
    if args.json:
        body = {"body": _body(event)} if args.body else {}
        logs = [
            _delivery_json(d, attempt_log=[_json(a) for a in attempts[d.id]]) for d in deliveries
        ]
        _dump(_json(event, matched_rules=rules, **body, deliveries=logs))
        return 0
    now, width = time.time(), _width()
    head = [("event", event.id), ("svix id", event.message_id), ("source", event.source)]
    head += [("type", event.type), ("received", when(event.received_at, now))]
    _print([f"{k + ':':<15}{v}" for k, v in [*head, ("matched rules", ", ".join(rules))]])
    for d in deliveries:
        info = [("rule", d.rule), ("sink", d.sink), ("status", d.status)]
        info += [("attempts", str(d.attempts)), ("idempotency", d.idempotency_key)]
        if _waiting(d):
            info.append(("next attempt", when(d.next_attempt_at, now)))
        info += [("last error", d.last_error)] if d.last_error else []
        _print([f"\ndelivery {d.id}", *(f"  {k + ':':<14}{v}" for k, v in info)])
        rows = [[str(a.number), iso(a.started_at) or "", f"{a.duration_ms:.0f}",
                 "-" if a.status_code is None else str(a.status_code), a.outcome, a.error or ""]
                for a in attempts[d.id]]  # fmt: skip
        lines = table(ATTEMPT_HEADERS, rows, width=width, indent="  ") if rows else []
        _print(lines, "  no attempts yet")
    if not deliveries:
        print("\nno deliveries: no rule matched this event")
    if args.body:
        print("\nbody:")
        _dump(_body(event))
    return 0


async def show_deliveries(store: Store, args: argparse.Namespace) -> int:
    rows = await store.list_deliveries(
        status=args.status, sink=args.sink, rule=args.rule, since=args.since, limit=args.limit
    )
    if args.json:
        _dump([_delivery_json(d) for d in rows])
    else:
        lines = table(DELIVERY_HEADERS, _delivery_rows(rows, time.time()), width=_width())
        _print(lines if rows else [], "no deliveries")
    return 0


async def replay(store: Store, args: argparse.Namespace) -> int:
    if args.dead or args.failed:
        selected: list[DeliveryRecord] = []
        for status in [s for s, on in (("dead", args.dead), ("failed", args.failed)) if on]:
            selected += await store.list_deliveries(
                status=status, sink=args.sink, rule=args.rule, since=args.since, limit=BULK_LIMIT
            )
        if not selected:
            print("nothing to replay: no delivery matches")
            return 0
        if not args.json:
            _preview(selected, capped=len(selected) >= BULK_LIMIT)
        if not _confirm(len(selected), args.yes):
            return 1
        ids = [d.id for d in selected]
    else:
        wanted = {DeliveryStatus.FAILED, DeliveryStatus.DEAD}
        wanted |= {DeliveryStatus.DELIVERED} if args.all else set()
        ids = []
        for ident in args.ids:
            if ident.startswith("dlv_"):
                ids.append(ident)
                continue
            event = await store.get_event(ident)
            if event is None:
                return _fail(f"no event {ident}")
            rows = await store.list_deliveries(event_id=event.id, limit=BULK_LIMIT)
            ids += [d.id for d in rows if d.status in wanted]
        ids = list(dict.fromkeys(ids))
    count, missed = await _apply(store, ids, named={i for i in args.ids if i.startswith("dlv_")})
    skipped = len(ids) - count - len(missed)  # changed since selected (e.g. a worker leased it)
    if args.json:
        print(json.dumps({"selected": len(ids), "replayed": count, "not_replayed": missed}))
    else:
        print(
            f"replayed {count} deliveries (they are due now; a running `relay serve` picks them up)"
            + (f"; {skipped} skipped: being sent right now or already pending" if skipped else "")
        )
    if missed:
        reason = "no such delivery, already pending, or being sent right now"
        return _fail(f"not replayed ({reason}): {', '.join(missed)}")
    return 0


def _preview(selected: Sequence[DeliveryRecord], *, capped: bool) -> None:
    by_sink = ", ".join(f"{s} {n}" for s, n in sorted(Counter(d.sink for d in selected).items()))
    more = " (the most one replay takes: run it again for the rest)" if capped else ""
    print(f"{len(selected)} deliveries match{more}; by sink: {by_sink}")
    _print(table(DELIVERY_HEADERS, _delivery_rows(selected[:SAMPLE], time.time()), width=_width()))
    if len(selected) > SAMPLE:
        print(f"... and {len(selected) - SAMPLE} more")


def _confirm(count: int, yes: bool) -> bool:
    """--yes, or a "y" typed at a terminal. Never waits on a stdin that is not a terminal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        _fail(f"not replaying {count} deliveries unconfirmed: stdin is not a terminal (pass --yes)")
        return False
    try:
        yes = input(f"Replay {count} deliveries? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        yes = False
    if not yes:
        _fail("nothing replayed")
    return yes


async def _apply(store: Store, ids: list[str], named: set[str]) -> tuple[int, list[str]]:
    """Replay in chunks, with a progress bar for a big batch on a terminal. Returns how many were
    replayed and which of the ``named`` ids (replayed one by one, to tell) were not."""
    now, done, count, missed = time.time(), 0, 0, []
    show = len(ids) > PROGRESS_OVER and sys.stderr.isatty()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for one in [i for i in chunk if i in named]:
            if await store.replay([one], now):
                count += 1
            else:
                missed.append(one)
        count += await store.replay([i for i in chunk if i not in named], now)
        done += len(chunk)
        if show:
            bar = "#" * (30 * done // len(ids))
            print(f"\rreplaying [{bar:.<30}] {done}/{len(ids)}", end="", file=sys.stderr)
    if show:
        print(file=sys.stderr)
    return count, missed


def _check_replay(args: argparse.Namespace) -> str | None:
    bulk, filters = args.dead or args.failed, args.sink or args.rule or args.since is not None
    problems = [
        (bulk and args.ids, "give delivery/event ids or --dead/--failed, not both"),
        (not bulk and not args.ids, "give delivery/event ids, or --dead/--failed (and filters)"),
        (not bulk and filters, "--sink, --rule and --since select for --dead/--failed"),
        (bulk and args.all, "--all is for event ids"),
    ]
    return next((message for wrong, message in problems if wrong), None)


def _handler(parser: argparse.ArgumentParser, job: Job, check: Callable[..., str | None]) -> Any:
    def handle(args: argparse.Namespace) -> int:
        problem = check(args)
        if problem:
            parser.error(problem)
        try:
            store = open_store(args.database or Settings.from_env().database_url)
        except ValueError as exc:
            return _fail(f"database URL: {exc}", 2)
        if isinstance(store, SQLiteStore) and not store.path.exists():  # open() would create it
            where = f"{store.path} (is RELAY_DATABASE_URL right? `relay serve` creates it)"
            return _fail(f"no database at {where}")

        async def run() -> int:
            await store.open(create=False)  # reading the log never creates a database
            try:
                return await job(store, args)
            finally:
                await store.close()

        try:
            return asyncio.run(run())
        except StoreError as exc:
            return _fail(str(exc))

    return handle


def register(sub: Any) -> None:
    """Add ``events``, ``event``, ``deliveries`` and ``replay`` to ``sub`` (argparse subparsers)."""

    def add(name: str, job: Job, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
        url_help = "store URL (default: $RELAY_DATABASE_URL or sqlite:///relay.db)"
        parser.add_argument("--database", metavar="URL", help=url_help)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        check = _check_replay if job is replay else lambda args: None
        parser.set_defaults(handler=_handler(parser, job, check))
        return parser

    def filters(parser: argparse.ArgumentParser, what: str, limit: bool = True) -> None:
        since_help = f"{what} since T: 30s, 15m, 1h, 2d ago, or an ISO-8601 time (default UTC)"
        parser.add_argument("--since", type=parse_since, metavar="T", help=since_help)
        if limit:
            parser.add_argument("--limit", type=_positive, default=50, metavar="N", help="(50)")

    events = add("events", show_events, help="list received events, newest first")
    events.add_argument("--type", metavar="T", help="an event type or glob (user.*)")
    filters(events, "received")

    event = add("event", show_event, help="show an event, its deliveries and their attempts")
    event.add_argument("id", metavar="ID", help="relay event id (evt_...) or svix id (msg_...)")
    event.add_argument("--body", action="store_true", help="also print the stored JSON body")

    dlv = add("deliveries", show_deliveries, help="list deliveries, newest first")
    dlv.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    dlv.add_argument("--sink", metavar="NAME")
    dlv.add_argument("--rule", metavar="NAME")
    filters(dlv, "created")

    rep = add("replay", replay, help="deliver again, by id or in bulk", description=REPLAY_NOTE)
    ids_help = "a delivery id (dlv_...), or an event's (evt_/msg_...): its failed and dead ones"
    rep.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
    rep.add_argument("--all", action="store_true", help="with an event id: delivered ones too")
    rep.add_argument("--dead", action="store_true", help="bulk: the dead deliveries matching")
    rep.add_argument("--failed", action="store_true", help="bulk: the failed deliveries matching")
    rep.add_argument("--sink", metavar="NAME", help="bulk: only this sink")
    rep.add_argument("--rule", metavar="NAME", help="bulk: only this rule")
    filters(rep, "bulk: only deliveries created", limit=False)
    rep.add_argument("--yes", "-y", action="store_true", help="replay without asking")
