"""``relay replay``: deliver again, by id or in bulk.

Replay writes the store ``relay serve`` runs on, while it runs: it only touches deliveries that are
not in flight, and a running ``relay serve`` picks them up (they are due at once). A cancelled or
suppressed delivery was held back on purpose: it is replayed only with ``--cancelled`` or
``--suppressed``, by id or in bulk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence

from relay.cli._format import BULK_LIMIT, DELIVERY_HEADERS, delivery_rows, emit, table, term_width
from relay.cli._shared import add_database_arg, add_json_arg, confirm, fail, with_store
from relay.cli.log import add_filters
from relay.store.base import REPLAYABLE_ON_REQUEST, DeliveryLog, DeliveryRecord, DeliveryStatus

CANCELLED, SUPPRESSED = DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = REPLAY_NOTE
    add_database_arg(parser)
    add_json_arg(parser)
    ids_help = "a delivery id (dlv_...), or an event's (evt_/msg_...): its failed and dead ones"
    parser.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
    parser.add_argument("--all", action="store_true", help="with an event id: delivered ones too")
    parser.add_argument("--dead", action="store_true", help="bulk: the dead deliveries matching")
    parser.add_argument(
        "--failed", action="store_true", help="bulk: the failed deliveries matching"
    )
    parser.add_argument(
        "--cancelled",
        action="store_true",
        help="send cancelled ones too: by id, or in bulk the cancelled deliveries matching",
    )
    parser.add_argument(
        "--suppressed",
        action="store_true",
        help="send suppressed ones too: by id, or in bulk the suppressed deliveries matching",
    )
    parser.add_argument("--sink", metavar="NAME", help="bulk: only this sink")
    parser.add_argument("--rule", metavar="NAME", help="bulk: only this rule")
    add_filters(parser, "bulk: only deliveries created", limit=False)
    parser.add_argument("--yes", "-y", action="store_true", help="replay without asking")
    parser.set_defaults(handler=with_store(parser, replay, _check))


CHUNK = 500  # delivery ids per replay transaction
SAMPLE = 10  # rows shown before a bulk replay asks
PROGRESS_OVER = 100  # a bulk replay of more shows a progress bar (on a terminal)
REPLAY_NOTE = (
    "Replayed deliveries are due at once; a running `relay serve` sends them. Each keeps its "
    "idempotency key (Resend drops a second send of the same key within 24 h, so an email that "
    "did go out is not sent twice) and its attempt history, and gets a fresh retry budget (its "
    "sink's retry.max_attempts); the ATTEMPTS column counts attempts since the last replay. "
    "Cancelled and suppressed deliveries were held back on purpose: they are replayed only "
    "with --cancelled or --suppressed."
)


async def replay(store: DeliveryLog, args: argparse.Namespace) -> int:
    also = [s for s, on in ((CANCELLED, args.cancelled), (SUPPRESSED, args.suppressed)) if on]
    if _bulk(args):
        selected: list[DeliveryRecord] = []
        bulk = [s for s, on in (("dead", args.dead), ("failed", args.failed)) if on]
        for status in [*bulk, *also]:
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
        wanted: set[DeliveryStatus] = {DeliveryStatus.FAILED, DeliveryStatus.DEAD, *also}
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
    named = {i for i in args.ids if i.startswith("dlv_")}
    count, missed = await _apply(store, ids, named, also)
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
        held = await _held_back(store, missed, also)
        if held:
            reason += f"; {held}"
        return fail(f"not replayed ({reason}): {', '.join(missed)}")
    return 0


async def _held_back(
    store: DeliveryLog, missed: Sequence[str], also: Sequence[DeliveryStatus]
) -> str:
    """A hint for named deliveries held back on purpose that the flags did not ask for."""
    held = []
    for delivery_id in missed:
        d = await store.get_delivery(delivery_id)
        if d is not None and d.status in REPLAYABLE_ON_REQUEST and d.status not in also:
            held.append(d)
    if not held:
        return ""
    flags = " or ".join(sorted({f"--{d.status}" for d in held}))
    which = ", ".join(f"{d.id} is {d.status}" for d in held)
    return f"{which}: pass {flags} to send it anyway"


def _preview(selected: Sequence[DeliveryRecord], *, capped: bool) -> None:
    by_sink = ", ".join(f"{s} {n}" for s, n in sorted(Counter(d.sink for d in selected).items()))
    more = " (the most one replay takes: run it again for the rest)" if capped else ""
    print(f"{len(selected)} deliveries match{more}; by sink: {by_sink}")
    emit(table(DELIVERY_HEADERS, delivery_rows(selected[:SAMPLE], time.time()), width=term_width()))
    if len(selected) > SAMPLE:
        print(f"... and {len(selected) - SAMPLE} more")


def _confirm(count: int, yes: bool) -> bool:
    unconfirmed = f"not replaying {count} deliveries unconfirmed"
    return confirm(f"Replay {count} deliveries?", unconfirmed, "nothing replayed", yes)


async def _apply(
    store: DeliveryLog, ids: list[str], named: set[str], also: Sequence[DeliveryStatus]
) -> tuple[int, list[str]]:
    """Replay in chunks (cancelled and suppressed ones only if ``also`` says so), with a
    progress bar for a big batch on a terminal. Returns how many were replayed and which of the
    ``named`` ids (replayed one by one, to tell) were not."""
    now, done, count, missed = time.time(), 0, 0, []
    show = len(ids) > PROGRESS_OVER and sys.stderr.isatty()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for one in [i for i in chunk if i in named]:
            if await store.replay([one], now, also=also):
                count += 1
            else:
                missed.append(one)
        count += await store.replay([i for i in chunk if i not in named], now, also=also)
        done += len(chunk)
        if show:
            bar = "#" * (30 * done // len(ids))
            print(f"\rreplaying [{bar:.<30}] {done}/{len(ids)}", end="", file=sys.stderr)
    if show:
        print(file=sys.stderr)
    return count, missed


def _bulk(args: argparse.Namespace) -> bool:
    """A bulk replay: --dead or --failed, or --cancelled/--suppressed without ids."""
    return bool(args.dead or args.failed or (not args.ids and (args.cancelled or args.suppressed)))


def _check(args: argparse.Namespace) -> str | None:
    bulk, filters = _bulk(args), args.sink or args.rule or args.since is not None
    problems = [
        (bulk and args.ids, "give delivery/event ids or --dead/--failed, not both"),
        (not bulk and not args.ids, "give delivery/event ids, or --dead/--failed (and filters)"),
        (not bulk and filters, "--sink, --rule and --since select for --dead/--failed"),
        (bulk and args.all, "--all is for event ids"),
    ]
    return next((message for wrong, message in problems if wrong), None)
