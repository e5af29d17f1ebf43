"""``relay events``, ``relay event`` and ``relay deliveries``: the delivery log, read.

They read the store ``relay serve`` writes, while it runs (SQLite in WAL mode allows another
process); each opens the store, queries, prints and closes, and none creates a database.
"""

from __future__ import annotations

import argparse
import time

from relay.cli._format import (
    ATTEMPT_HEADERS,
    BULK_LIMIT,
    DELIVERY_HEADERS,
    delivery_json,
    delivery_rows,
    dump,
    emit,
    event_body,
    iso,
    parse_since,
    positive,
    record_json,
    table,
    term_width,
    waiting,
    when,
)
from relay.cli._shared import add_database_arg, add_json_arg, fail, with_store
from relay.store.base import DeliveryLog, DeliveryRecord, DeliveryStatus


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_database_arg(parser)
    add_json_arg(parser)
    if name == "events":
        parser.add_argument("--type", metavar="T", help="an event type or glob (user.*)")
        add_filters(parser, "received")
        parser.set_defaults(handler=with_store(parser, show_events))
    elif name == "event":
        parser.add_argument(
            "id", metavar="ID", help="relay event id (evt_...) or svix id (msg_...)"
        )
        parser.add_argument("--body", action="store_true", help="also print the stored JSON body")
        parser.set_defaults(handler=with_store(parser, show_event))
    else:
        statuses = [s.value for s in DeliveryStatus]
        parser.add_argument(
            "--status", choices=statuses, metavar="S", help=f"one of: {', '.join(statuses)}"
        )
        parser.add_argument("--sink", metavar="NAME")
        parser.add_argument("--rule", metavar="NAME")
        add_filters(parser, "created")
        parser.set_defaults(handler=with_store(parser, show_deliveries))


def add_filters(parser: argparse.ArgumentParser, what: str, *, limit: bool = True) -> None:
    """``--since`` (and ``--limit``) of a listing."""
    since_help = f"{what} since T: 30s, 15m, 1h, 2d ago, or an ISO-8601 time (default UTC)"
    parser.add_argument("--since", type=parse_since, metavar="T", help=since_help)
    if limit:
        parser.add_argument("--limit", type=positive, default=50, metavar="N", help="(50)")


async def show_events(store: DeliveryLog, args: argparse.Namespace) -> int:
    events = await store.list_events(type_glob=args.type, since=args.since, limit=args.limit)
    by_event = await store.count_deliveries([e.id for e in events])
    counts = [by_event.get(e.id, {}) for e in events]
    if args.json:
        dump([record_json(e, deliveries=dict(c)) for e, c in zip(events, counts, strict=True)])
        return 0
    now = time.time()
    rows = [[e.id, e.type, e.source, e.message_id, when(e.received_at, now),
             ", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "none"]
            for e, c in zip(events, counts, strict=True)]  # fmt: skip
    headers = ("ID", "TYPE", "SOURCE", "SVIX ID", "RECEIVED", "DELIVERIES")
    emit(table(headers, rows, width=term_width()) if rows else [], "no events")
    return 0


async def show_event(store: DeliveryLog, args: argparse.Namespace) -> int:
    event = await store.get_event(args.id)
    if event is None:
        return fail(f"no event {args.id}")
    deliveries = await store.list_deliveries(event_id=event.id, limit=BULK_LIMIT)
    deliveries.sort(key=lambda d: (d.rule, d.send_index, d.sink))
    attempts = {d.id: await store.list_attempts(d.id) for d in deliveries}
    rules = list(dict.fromkeys(d.rule for d in deliveries))
    if args.json:
        body = {"body": event_body(event)} if args.body else {}
        logs = [
            delivery_json(d, attempt_log=[record_json(a) for a in attempts[d.id]])
            for d in deliveries
        ]
        dump(record_json(event, matched_rules=rules, **body, deliveries=logs))
        return 0
    now, width = time.time(), term_width()
    head = [("event", event.id), ("svix id", event.message_id), ("source", event.source)]
    head += [("type", event.type), ("received", when(event.received_at, now))]
    emit([f"{k + ':':<15}{v}" for k, v in [*head, ("matched rules", ", ".join(rules))]])
    for d in deliveries:
        info = [("rule", d.rule), ("sink", d.sink), ("status", d.status)]
        info += [("attempts", str(d.attempts)), ("idempotency", d.idempotency_key)]
        if waiting(d):
            due = "due" if d.status is DeliveryStatus.SCHEDULED else "next attempt"
            info.append((due, when(d.next_attempt_at, now)))
        info += [("cancel key", d.cancel_key)] if d.cancel_key else []
        info += await digest_lines(store, d)
        if d.last_error:
            final = d.status in (DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED)
            info.append(("reason" if final else "last error", d.last_error))
        emit([f"\ndelivery {d.id}", *(f"  {k + ':':<14}{v}" for k, v in info)])
        rows = [[str(a.number), iso(a.started_at) or "", f"{a.duration_ms:.0f}",
                 "-" if a.status_code is None else str(a.status_code), a.outcome, a.error or ""]
                for a in attempts[d.id]]  # fmt: skip
        lines = table(ATTEMPT_HEADERS, rows, width=width, indent="  ") if rows else []
        emit(lines, "  no attempts yet")
    if not deliveries:
        print(
            "\nno deliveries: no rule sends this event (one that cancels on it leaves its"
            " reason on what it cancelled: relay deliveries --status cancelled)"
        )
    if args.body:
        print("\nbody:")
        dump(event_body(event))
    return 0


async def digest_lines(store: DeliveryLog, d: DeliveryRecord) -> list[tuple[str, str]]:
    """Where a delivery stands in a digest: an event's place (which digest sends it), or a
    digest's own (how many events it holds)."""
    if d.batch_id is None:
        return []
    rows = await store.list_deliveries(batch_id=d.batch_id, limit=BULK_LIMIT)
    if d.status is DeliveryStatus.BATCHED:
        digests = [r for r in rows if r.status is not DeliveryStatus.BATCHED]
        digests = [r for r in digests if r.send_index == d.send_index]
        sent_by = ", ".join(f"{r.id} ({r.status})" for r in digests) or "not made yet"
        return [("digest", f"batch {d.batch_id}, sent by {sent_by}")]
    members = {r.event_id for r in rows if r.status is DeliveryStatus.BATCHED}
    return [("digest of", f"batch {d.batch_id}: {len(members)} event(s)")]


async def show_deliveries(store: DeliveryLog, args: argparse.Namespace) -> int:
    rows = await store.list_deliveries(
        status=args.status, sink=args.sink, rule=args.rule, since=args.since, limit=args.limit
    )
    if args.json:
        dump([delivery_json(d) for d in rows])
    else:
        lines = table(DELIVERY_HEADERS, delivery_rows(rows, time.time()), width=term_width())
        emit(lines if rows else [], "no deliveries")
    return 0
