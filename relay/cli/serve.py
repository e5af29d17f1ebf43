"""``relay serve`` (ingest and, unless ``--no-worker``, the worker) and ``relay worker`` (the
worker alone, with ``/healthz`` on its own port): uvicorn running ``relay.app.create_app``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from relay.cli._shared import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_args, load, settings_for
from relay.errors import StoreError
from relay.settings import Settings
from relay.store.base import Queue, Store

if TYPE_CHECKING:
    from relay.config import Config
    from relay.store.lock import StoreLock


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="render and log what sinks would send; send nothing (signature verification stays on)",
    )
    if name == "serve":
        parser.add_argument(
            "--host", help="address to listen on (default: $RELAY_HOST or 127.0.0.1)"
        )
        parser.add_argument("--port", type=int, help="port (default: $RELAY_PORT or 8000)")
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="ingest only; run `relay worker` separately to deliver",
        )
        parser.set_defaults(handler=serve)
    else:
        parser.add_argument("--host", help="address for /healthz (default: 127.0.0.1)")
        parser.add_argument(
            "--port", type=int, default=8001, help="port for /healthz (default 8001)"
        )
        parser.set_defaults(handler=worker)


def _settings(args: argparse.Namespace, **changes: Any) -> Settings:
    return settings_for(args).with_(dry_run=args.dry_run, **changes)


def serve(args: argparse.Namespace) -> int:
    worker_on = False if args.no_worker else None
    return run(_settings(args, host=args.host, port=args.port, worker=worker_on))


def worker(args: argparse.Namespace) -> int:
    return run(_settings(args, ingest=False, host=args.host, port=args.port))


def run(settings: Settings) -> int:
    """Load and check everything, then serve until a shutdown signal."""
    from relay import logs
    from relay.store import open_store

    logs.configure(settings.log_format, logs.level(settings.log_level))
    config = load(settings, "dry-run" if settings.dry_run else "serve", sys.stderr)
    if config is None:
        print(
            "relay: not starting: fix the errors above (`relay check` shows them too)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        store = open_store(settings.database_url)
    except ValueError as exc:
        print(f"relay: RELAY_DATABASE_URL: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        lock = _lock(store, settings)
    except StoreError as exc:
        print(f"relay: not starting: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return _serve(settings, config, store)
    finally:
        if lock is not None:
            lock.release()


def _lock(store: Queue, settings: Settings) -> StoreLock | None:
    """A delivering relay's exclusive lock on its SQLite file (``relay.store.lock``)."""
    from relay.store import SQLiteStore
    from relay.store.lock import hold

    if settings.worker and isinstance(store, SQLiteStore):
        return hold(store.path)
    return None


def _serve(settings: Settings, config: Config, store: Store) -> int:
    from relay.app import create_app

    problem = asyncio.run(_preflight(store, settings))
    if problem:
        print(f"relay: not starting: {problem}", file=sys.stderr)
        return EXIT_FAILED
    app = create_app(settings, config, store)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
            server_header=False,
        ),
        on_exit=app.state.relay.begin_shutdown,
    )
    server.run()
    return EXIT_OK


class _Server(uvicorn.Server):
    """uvicorn's server, telling the relay the moment a shutdown signal arrives, so the worker
    stops claiming at once and the grace period counts from the signal, not from when uvicorn
    has finished with open connections."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


async def _preflight(store: Queue, settings: Settings) -> str | None:
    """Open and close the store once, so a bad database is one clear line, not a traceback."""
    try:
        await store.open(upgrade=settings.db_upgrade)
    except StoreError as exc:
        return str(exc)
    await store.close()
    return None
