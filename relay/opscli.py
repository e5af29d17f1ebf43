"""Ops commands over the delivery log: ``events``, ``event``, ``deliveries`` and ``replay``.

They read (and replay writes) the same store ``relay serve`` writes, while it runs: SQLite in WAL
mode allows another process. Each command opens the store, queries, prints and closes; none
creates a database. Tables are for people (errors cut to the terminal's width); ``--json`` output
is for scripts and holds everything, times as UTC ISO-8601.

This module holds their arguments, the store each runs against, and ``replay``; the three that
only read, and the tables, times and JSON all four print, are in ``relay.logview``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from relay.errors import StoreError
from relay.logview import (
    BULK_LIMIT,
    DELIVERY_HEADERS,
    delivery_rows,
    emit,
    fail,
    parse_since,
    positive,
    show_deliveries,
    show_event,
    show_events,
    table,
    term_width,
)
from relay.settings import Settings
from relay.store import SQLiteStore, open_store
from relay.store.base import DeliveryRecord, DeliveryStatus, Store

Job = Callable[[Store, argparse.Namespace], Awaitable[int]]
CHUNK = 500  # delivery ids per replay transaction
SAMPLE = 10  # rows shown before a bulk replay asks
PROGRESS_OVER = 100  # a bulk replay of more shows a progress bar (on a terminal)
REPLAY_NOTE = (
    "Replayed deliveries are due at once; a running `relay serve` sends them. Each keeps its "
    "idempotency key (Resend drops a second send of the same key within 24 h, so an email that "
    "did go out is not sent twice) and its attempt history, and gets a fresh retry budget (its "
    "sink's retry.max_attempts); the ATTEMPTS column counts attempts since the last replay."
)


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
                return fail(f"no event {ident}")
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
        return fail(f"not replayed ({reason}): {', '.join(missed)}")
    return 0


def _preview(selected: Sequence[DeliveryRecord], *, capped: bool) -> None:
    by_sink = ", ".join(f"{s} {n}" for s, n in sorted(Counter(d.sink for d in selected).items()))
    more = " (the most one replay takes: run it again for the rest)" if capped else ""
    print(f"{len(selected)} deliveries match{more}; by sink: {by_sink}")
    emit(table(DELIVERY_HEADERS, delivery_rows(selected[:SAMPLE], time.time()), width=term_width()))
    if len(selected) > SAMPLE:
        print(f"... and {len(selected) - SAMPLE} more")


def _confirm(count: int, yes: bool) -> bool:
    """--yes, or a "y" typed at a terminal. Never waits on a stdin that is not a terminal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        fail(f"not replaying {count} deliveries unconfirmed: stdin is not a terminal (pass --yes)")
        return False
    try:
        yes = input(f"Replay {count} deliveries? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        yes = False
    if not yes:
        fail("nothing replayed")
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
            return fail(f"database URL: {exc}", 2)
        if isinstance(store, SQLiteStore) and not store.path.exists():  # open() would create it
            where = f"{store.path} (is RELAY_DATABASE_URL right? `relay serve` creates it)"
            return fail(f"no database at {where}")

        async def run() -> int:
            await store.open(create=False)  # reading the log never creates a database
            try:
                return await job(store, args)
            finally:
                await store.close()

        try:
            return asyncio.run(run())
        except StoreError as exc:
            return fail(str(exc))

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
            parser.add_argument("--limit", type=positive, default=50, metavar="N", help="(50)")

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
