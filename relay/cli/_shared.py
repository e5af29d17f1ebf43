"""What every command shares: exit codes, the common arguments (declared once here), settings from
the environment and the command line, loading the config with its located errors, and running an
ops command against the store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from relay.config import Config, Mode, load_config
from relay.errors import ConfigError, Diagnostic, StoreError
from relay.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (invalid config, a failed request, ...)
EXIT_USAGE = 2  # the command line or the environment is wrong
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`relay preview | head`), as after SIGPIPE

Handler = Callable[[argparse.Namespace], int]


def add_config_args(parser: argparse.ArgumentParser, *, samples: bool = False) -> None:
    """``--rules`` and ``--templates`` (and ``--samples``)."""
    parser.add_argument(
        "--rules", type=Path, help="rules file (default: $RELAY_RULES or rules.yaml)"
    )
    parser.add_argument(
        "--templates", type=Path, help="templates folder (default: $RELAY_TEMPLATES or templates)"
    )
    if samples:
        parser.add_argument(
            "--samples", type=Path, help="sample events folder (default: $RELAY_SAMPLES or samples)"
        )


def add_database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="database URL (default: $RELAY_DATABASE_URL or sqlite:///relay.db)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from ``RELAY_*``, with the command line's ``--rules/--templates/--samples``."""
    return Settings.from_env().with_(
        rules_path=getattr(args, "rules", None),
        templates_dir=getattr(args, "templates", None),
        samples_dir=getattr(args, "samples", None),
    )


def database_url(args: argparse.Namespace) -> str:
    return str(args.database or Settings.from_env().database_url)


def load(
    settings: Settings,
    mode: Mode,
    out: TextIO,
    *,
    warnings: bool = True,
    report: Callable[[Sequence[Diagnostic]], None] | None = None,
) -> Config | None:
    """Load the config, printing located errors (and warnings) to ``out``, or handing them to
    ``report``; None when it is invalid."""
    show = report or (lambda diagnostics: print_diagnostics(diagnostics, out))
    try:
        config = load_config(settings.rules_path, settings.templates_dir, mode=mode)
    except ConfigError as exc:
        show([d for d in exc.diagnostics if warnings or d.severity == "error"])
        return None
    if warnings:
        show(list(config.warnings))
    return config


def print_diagnostics(diagnostics: Sequence[Diagnostic], out: TextIO) -> None:
    for diagnostic in diagnostics:
        print(diagnostic, file=out)


def fail(message: str, code: int = EXIT_FAILED) -> int:
    """``relay: message`` on stderr; returns ``code`` (the exit code) to pass on."""
    print(f"relay: {message}", file=sys.stderr)
    return code


def confirm(question: str, unconfirmed: str, refused: str, yes: bool) -> bool:
    """--yes, or a "y" typed at a terminal to ``question``; never waits on a stdin that is not
    a terminal (then says ``unconfirmed``). A "no" says ``refused``."""
    if yes:
        return True
    if not sys.stdin.isatty():
        fail(f"{unconfirmed}: stdin is not a terminal (pass --yes)")
        return False
    try:
        yes = input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        yes = False
    if not yes:
        fail(refused)
    return yes


StoreJob = Callable[[Any, argparse.Namespace], Awaitable[int]]


def with_store(
    parser: argparse.ArgumentParser,
    job: StoreJob,
    check: Callable[[argparse.Namespace], str | None] = lambda args: None,
) -> Handler:
    """A handler that opens the store ``--database`` names (never creating one: reading the log
    must not make a database), runs ``job(store, args)`` and closes it. ``check`` may refuse the
    arguments first (a usage error, exit 2)."""

    def handle(args: argparse.Namespace) -> int:
        from relay.store import SQLiteStore, open_store

        problem = check(args)
        if problem:
            parser.error(problem)
        try:
            store = open_store(database_url(args))
        except ValueError as exc:
            return fail(f"database URL: {exc}", EXIT_USAGE)
        if isinstance(store, SQLiteStore) and not store.path.exists():  # open() would create it
            where = f"{store.path} (is RELAY_DATABASE_URL right? `relay serve` creates it)"
            return fail(f"no database at {where}")

        async def run() -> int:
            await store.open(create=False)
            try:
                return await job(store, args)
            finally:
                await store.close()

        try:
            return asyncio.run(run())
        except StoreError as exc:
            return fail(str(exc))

    return handle
