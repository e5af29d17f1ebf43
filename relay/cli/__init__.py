"""The ``relay`` command: a thin shell over the functions ``serve`` uses.

``COMMANDS`` maps each command to the module that implements it and its one-line help. Only the
module of the command being run is imported (``relay check`` imports neither uvicorn nor psycopg):
``main`` lists every command from the table, and lets the chosen one's module ``register`` its
arguments and handler on its subparser. Exit codes are ``relay.cli._shared``'s.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from relay import __version__
from relay.cli._shared import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from relay.errors import SettingsError

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "check": (
        "relay.cli.check",
        "validate rules.yaml and render every template against the sample events",
    ),
    "preview": ("relay.cli.preview", "show what an event would send (sends nothing)"),
    "test": ("relay.cli.golden", "run the golden tests of the rules (rules.test.yaml)"),
    "studio": ("relay.cli.studio", "a local web page drawing what each sample event sends, live"),
    "serve": ("relay.cli.serve", "receive webhooks and deliver them (ingest + worker)"),
    "worker": (
        "relay.cli.serve",
        "deliver stored events (no ingest endpoint; /healthz on --port)",
    ),
    "send-test": ("relay.cli.send_test", "sign a sample event and post it to a running relay"),
    "db": ("relay.cli.db", "manage the database schema (create, upgrade)"),
    "events": ("relay.cli.log", "list received events, newest first"),
    "event": ("relay.cli.log", "show an event, its deliveries and their attempts"),
    "deliveries": ("relay.cli.log", "list deliveries, newest first"),
    "replay": ("relay.cli.replay", "deliver again, by id or in bulk"),
    "explain": ("relay.cli.explain", "why a stored event went where it went, and what differs now"),
    "purge": ("relay.cli.purge", "delete delivered and dead history older than a duration"),
    "suppressions": (
        "relay.cli.suppressions",
        "addresses email is held back from (bounces, unsubscribes): list, add, remove",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser: every command listed; the arguments of the one ``argv`` names."""
    parser = argparse.ArgumentParser(
        prog="relay", description="A verified, durable relay for Clerk (Svix) webhooks."
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == chosen:
            importlib.import_module(module).register(name, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingsError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader closed the pipe (`relay events | head`): stop quietly, as a command killed
        # by SIGPIPE would. What is still buffered for stdout goes nowhere, not into a second
        # error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
