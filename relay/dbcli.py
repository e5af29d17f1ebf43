"""``relay db``: explicit, versioned schema changes (see ``relay.store.migrations``).

``relay db upgrade`` creates the schema in an empty database or brings an older one up to the
version this relay needs, in one transaction; running it again changes nothing. It prints the
database URL with its password shown as ***.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from relay.errors import StoreError
from relay.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
    """Add ``relay db ...`` to ``sub`` (an argparse subparsers action)."""
    db = sub.add_parser("db", help="manage the database schema (create, upgrade)")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = commands.add_parser(
        "upgrade", help="create the schema, or upgrade it to this relay's version"
    )
    upgrade.add_argument(
        "--database",
        metavar="URL",
        help="database URL (default: $RELAY_DATABASE_URL or sqlite:///relay.db)",
    )
    upgrade.set_defaults(handler=cmd_upgrade)


def cmd_upgrade(args: argparse.Namespace) -> int:
    from relay.store import open_store, redact_url
    from relay.store.migrations import Upgradable

    url = args.database or Settings.from_env().database_url
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
