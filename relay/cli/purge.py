"""``relay purge --older-than DURATION``: delete finished history now.

What the background retention does (``relay.delivery.retention``), on demand: events received
more than DURATION ago whose deliveries are all finished (``FINAL_STATUSES``) go, with their
deliveries and attempts, in small batches, while ``relay serve`` runs. Pending work is never
purged. DURATION is at least 28h: a purged event's id is accepted as new, and Svix retries a
message for ~28 h.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from relay.cli._format import iso
from relay.cli._shared import add_database_arg, add_json_arg, confirm, with_store
from relay.config.durations import format_duration, parse_duration
from relay.config.model import MIN_RETENTION_S
from relay.store.base import DeliveryLog, Purged

PURGE_NOTE = (
    "Deletes, in small batches and while `relay serve` runs, the events received more than "
    "DURATION ago whose deliveries are all delivered, dead, cancelled or suppressed (or in a sent "
    "digest), with their deliveries and attempts: "
    "what rules.yaml's `retention:` does every hour. Pending work is never purged. A purged "
    "event's id is accepted again if it comes back, so DURATION is at least 28h (Svix retries "
    "a message for up to ~28 h)."
)


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = PURGE_NOTE
    add_database_arg(parser)
    add_json_arg(parser)
    parser.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="purge history received longer ago than this: 28h at least (30d, 8w)",
    )
    parser.add_argument("--yes", "-y", action="store_true", help="purge without asking")
    parser.set_defaults(handler=with_store(parser, purge))


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < MIN_RETENTION_S:
        raise argparse.ArgumentTypeError(
            f"{format_duration(seconds)} is shorter than 28h: Svix retries a message for up to"
            " ~28 h, and a purged event's retry would be accepted as new"
        )
    return seconds


async def purge(store: DeliveryLog, args: argparse.Namespace) -> int:
    from relay.delivery.retention import purge as purge_batches

    older_than = time.time() - args.older_than
    what = f"finished history received before {iso(older_than)}"
    if not confirm(f"Purge {what}?", f"not purging {what} unconfirmed", "nothing purged", args.yes):
        return 1
    show = not args.json and sys.stderr.isatty()

    def progress(batch: Purged) -> None:
        if show and batch.events:
            print(f"\rpurging: {batch.events} more events", end="", file=sys.stderr)

    total = await purge_batches(store, older_than, each=progress)
    if show:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({"older_than": iso(older_than), "events": total.events,
                          "deliveries": total.deliveries, "attempts": total.attempts}))  # fmt: skip
    else:
        print(
            f"purged {total.events} events, {total.deliveries} deliveries and {total.attempts}"
            f" attempts received before {iso(older_than)} (pending work is kept)"
        )
    return 0
