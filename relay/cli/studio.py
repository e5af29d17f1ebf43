"""``relay studio``: a local web page showing what every rule sends for every sample event, drawn
as its recipient sees it (an email's HTML and text, a Slack message, an HTTP request, a SQL
statement), and the rules that do not match with the reason. It follows the files: saving
rules.yaml, a template or a sample updates the page within a second, and a broken file shows its
located errors there. Events can also be pasted or dropped into the page and, with
``--database``, opened from the delivery log by id (read only).

It listens on 127.0.0.1 by default, sends nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

from relay.cli._shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    fail,
    settings_for,
)

DEFAULT_PORT = 8050


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser, samples=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="also open stored events by id from this delivery log (read only)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from relay.store import SQLiteStore, open_store
    from relay.studio.app import create_studio_app

    settings = settings_for(args)
    log = None
    if args.database:
        try:
            log = open_store(args.database)
        except ValueError as exc:
            return fail(f"database URL: {exc}", EXIT_USAGE)
        if isinstance(log, SQLiteStore) and not log.path.exists():
            return fail(f"no database at {log.path}")
    app = create_studio_app(settings, log=log, host=args.host)
    print(f"relay studio: http://{args.host}:{args.port}/ ({settings.rules_path},"
          f" {settings.templates_dir}/, {settings.samples_dir}/); Ctrl-C stops it",
          file=sys.stderr, flush=True)  # fmt: skip
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    server.run()
    return EXIT_OK if server.started else EXIT_FAILED
