"""``relay db``: explicit, versioned schema changes (see ``relay.store.migrations``).

``relay db upgrade`` creates the schema in an empty database or brings an older one up to the
version this relay needs, in one transaction; running it again changes nothing. It prints the
database URL with its password shown as ***.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from relay.cli._shared import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_database_arg, database_url
from relay.errors import StoreError


def register(name: str, parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = commands.add_parser(
        "upgrade", help="create the schema, or upgrade it to this relay's version"
    )
    add_database_arg(upgrade)
    upgrade.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    from relay.store import open_store, redact_url
    from relay.store.migrations import Upgradable

    url = database_url(args)
    shown = redact_url(url)
    try:
        store = open_store(url)
    except ValueError as exc:
        print(f"relay db upgrade: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(store, Upgradable):
        print(f"relay db upgrade: database {shown}: this store has no schema", file=sys.stderr)
        return EXIT_USAGE
    try:
        before, after = asyncio.run(store.upgrade())
    except StoreError as exc:
        print(f"relay db upgrade: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if before == after:
        print(f"database {shown}: schema version {after} (up to date)")
    else:
        print(f"database {shown}: upgraded from {before} to {after}")
    return EXIT_OK
