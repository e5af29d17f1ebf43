"""``relay suppressions``: the suppression list (``relay.recipients``), listed, added to and
taken from, while ``relay serve`` runs.

``list`` shows who is held back from what, why, since when and which event did it; ``add`` puts
addresses on it (reason ``manual`` unless told); ``remove`` takes them off after showing what it
would remove and asking (or ``--yes``), and says how to send what was suppressed meanwhile.
Addresses are compared as relay compares them (``Ada <ADA@Example.com>`` is ``ada@example.com``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from relay.cli._format import emit, iso, positive, table, term_width, when
from relay.cli._shared import add_database_arg, add_json_arg, confirm, fail, with_store
from relay.recipients.addresses import ALL, Reason, Suppression, SuppressionList, normalise
from relay.recipients.addresses import scope_problem as _scope_problem

HEADERS = ("ADDRESS", "SCOPE", "REASON", "SINCE", "EVENT")
NOTE = (
    "The suppression list holds addresses back from all email (a hard bounce, a complaint) or "
    "from one category (an unsubscribe link's). A suppressed email is recorded as suppressed, "
    "with the reason, and never sent; after `remove`, `relay replay --suppressed ID` sends one."
)
REASONS = [r.value for r in Reason]
ADDRESS_HELP = "an email address, in any case (Ada <ada@example.com> is ada@example.com)"


def _scope(text: str) -> str:
    problem = _scope_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.description = NOTE
    commands = parser.add_subparsers(dest="suppressions_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="the suppressed addresses, newest first")
    listing.add_argument("--address", metavar="A", help="only this address")
    listing.add_argument("--scope", type=_scope, metavar="S", help="only this scope")
    listing.add_argument(
        "--reason", choices=REASONS, metavar="R", help=f"only this reason: {', '.join(REASONS)}"
    )
    listing.add_argument("--limit", type=positive, default=50, metavar="N", help="(50)")
    adding = commands.add_parser("add", help="suppress addresses (reason manual unless told)")
    adding.add_argument("addresses", nargs="+", metavar="ADDRESS", help=ADDRESS_HELP)
    adding.add_argument(
        "--scope", type=_scope, default=ALL, metavar="S", help="all (default) or a category"
    )
    adding.add_argument(
        "--reason", choices=REASONS, default="manual", metavar="R",
        help=f"{', '.join(REASONS)} (default: manual)",
    )  # fmt: skip
    removing = commands.add_parser("remove", help="let addresses get email again")
    removing.add_argument("addresses", nargs="+", metavar="ADDRESS", help=ADDRESS_HELP)
    removing.add_argument(
        "--scope", type=_scope, metavar="S", help="only this scope (default: every scope)"
    )
    removing.add_argument("--yes", "-y", action="store_true", help="remove without asking")
    for sub, job in ((listing, show), (adding, add), (removing, remove)):
        add_database_arg(sub)
        add_json_arg(sub)
        sub.set_defaults(handler=with_store(sub, job, _check))


def _check(args: argparse.Namespace) -> str | None:
    """Every address given must be one (a usage error before the store is opened)."""
    given = getattr(args, "addresses", None) or [getattr(args, "address", None)]
    wrong = [a for a in given if a and normalise(a) is None]
    return f"not an email address: {', '.join(map(repr, wrong))}" if wrong else None


def _rows(found: Sequence[Suppression], now: float) -> list[list[str]]:
    return [[s.address, s.scope, s.reason, when(s.created_at, now), s.event_id or "-"]
            for s in found]  # fmt: skip


def _json(s: Suppression) -> dict[str, Any]:
    return {**asdict(s), "created_at": iso(s.created_at, ms=True)}


async def show(store: SuppressionList, args: argparse.Namespace) -> int:
    address = None if args.address is None else normalise(args.address)
    reason = None if args.reason is None else Reason(args.reason)
    found = await store.list_suppressions(
        address=address, scope=args.scope, reason=reason, limit=args.limit
    )
    if args.json:
        print(json.dumps([_json(s) for s in found], indent=2))
        return 0
    lines = table(HEADERS, _rows(found, time.time()), width=term_width())
    emit(lines if found else [], "no suppressions")
    return 0


async def add(store: SuppressionList, args: argparse.Namespace) -> int:
    now, added, already = time.time(), [], []
    for raw in args.addresses:
        address = normalise(raw)
        assert address is not None  # _check
        new = Suppression(address, args.scope, Reason(args.reason), None, now)
        if await store.add_suppression(new):
            added.append(new)
        else:
            found = await store.list_suppressions(address=address, scope=args.scope, limit=1)
            already += found
    if args.json:
        print(json.dumps({"added": [_json(s) for s in added],
                          "already": [_json(s) for s in already]}, indent=2))  # fmt: skip
        return 0
    for s in added:
        print(f"suppressed {s.address} ({'all email' if s.scope == ALL else s.scope}, {s.reason})")
    for s in already:
        print(f"already suppressed: {s.describe()}")
    return 0


async def remove(store: SuppressionList, args: argparse.Namespace) -> int:
    found: list[Suppression] = []
    for raw in dict.fromkeys(normalise(a) for a in args.addresses):
        assert raw is not None  # _check
        found += await store.list_suppressions(address=raw, scope=args.scope, limit=1000)
    if not found:
        return fail("nothing to remove: no suppression matches")
    if not args.json:
        print(f"{len(found)} suppression(s) match:")
        emit(table(HEADERS, _rows(found, time.time()), width=term_width()))
    question, unconfirmed = f"Remove {len(found)}?", f"not removing {len(found)} unconfirmed"
    if not confirm(question, unconfirmed, "nothing removed", args.yes):
        return 1
    removed = 0
    for s in found:
        removed += await store.remove_suppressions(s.address, s.scope)
    if args.json:
        print(json.dumps({"removed": removed, "suppressions": [_json(s) for s in found]}))
    else:
        print(
            f"removed {removed} suppression(s): new email to these addresses goes out again"
            " (one suppressed meanwhile is sent only when replayed: relay replay --suppressed ID)"
        )
    return 0
