"""``relay serve`` (ingest and, unless ``--no-worker``, the worker) and ``relay worker`` (the
worker alone, with ``/healthz``, ``/readyz`` and ``/metrics`` on its own port): uvicorn running
``relay.server.app.create_app`` on the listeners relay binds itself (the public one, and the ops one
when ``--ops-port`` is set), with ``relay.server.connections``' guarded protocol."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from relay.cli._shared import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_args, load, settings_for
from relay.config import Mode
from relay.errors import Diagnostic, StoreError
from relay.server.connections import (
    AcceptFailures,
    ConnectionGuard,
    connections_allowed,
    raise_open_files_limit,
)
from relay.settings import MAX_CONNECTIONS, Settings
from relay.store.base import Queue, Store

if TYPE_CHECKING:
    from relay.config import Config
    from relay.store.lock import StoreLock

log = logging.getLogger("relay.app")  # the name its lines have always had


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
            "--ops-host",
            help="address of the ops port (default: $RELAY_OPS_HOST or 127.0.0.1)",
        )
        parser.add_argument(
            "--ops-port",
            type=int,
            help="serve /healthz, /readyz and /metrics on this port only, and only the webhooks"
            " on --port (default: $RELAY_OPS_PORT; unset: all on --port)",
        )
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
        parser.add_argument(
            "--ops-host",
            help="with --ops-port: its address (default: $RELAY_OPS_HOST or 127.0.0.1)",
        )
        parser.add_argument(
            "--ops-port",
            type=int,
            help="serve /healthz, /readyz and /metrics here instead of --host/--port (default:"
            " $RELAY_OPS_PORT)",
        )
        parser.set_defaults(handler=worker)


def _settings(args: argparse.Namespace, **changes: Any) -> Settings:
    return settings_for(args).with_(dry_run=args.dry_run, **changes)


def serve(args: argparse.Namespace) -> int:
    worker_on = False if args.no_worker else None
    ops = {"ops_host": args.ops_host, "ops_port": args.ops_port}
    return run(_settings(args, host=args.host, port=args.port, worker=worker_on, **ops))


def worker(args: argparse.Namespace) -> int:
    """The worker has no webhooks: its one listener is the ops address when one is set."""
    settings = _settings(args, ingest=False, host=args.host, port=args.port)
    settings = settings.with_(ops_host=args.ops_host, ops_port=args.ops_port)
    if settings.ops_port is not None:
        settings = dataclasses.replace(
            settings, host=settings.ops_host, port=settings.ops_port, ops_port=None
        )
    return run(settings)


def run(settings: Settings) -> int:
    """Load and check everything, then serve until a shutdown signal."""
    from relay import logs
    from relay.store import open_store

    as_json = logs.configure(settings.log_format, logs.level(settings.log_level))
    logs.capture_process()
    say = _said_as_log_lines if as_json else _printed
    if settings.ops_port is not None and settings.ops_port == settings.port:
        say(f"relay: the ops port must differ from the port ({settings.port})")
        return EXIT_USAGE
    mode: Mode = "dry-run" if settings.dry_run else "serve"
    config = load(settings, mode, sys.stderr, report=_logged if as_json else None)
    if config is None:
        say("relay: not starting: fix the errors above (`relay check` shows them too)")
        return EXIT_FAILED
    try:
        store = open_store(settings.database_url)
    except ValueError as exc:
        say(f"relay: RELAY_DATABASE_URL: {exc}")
        return EXIT_USAGE
    try:
        lock = _lock(store, settings)
    except StoreError as exc:
        say(f"relay: not starting: {exc}")
        return EXIT_FAILED
    try:
        return _serve(settings, config, store, say)
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


def _serve(settings: Settings, config: Config, store: Store, say: Callable[[str], None]) -> int:
    from relay.server.app import create_app

    problem = asyncio.run(_preflight(store, settings))
    if problem:
        say(f"relay: not starting: {problem}")
        return EXIT_FAILED
    try:
        listeners = [_listen(settings.host, settings.port)]
        if settings.ops_port is not None:
            listeners.append(_listen(settings.ops_host, settings.ops_port))
    except OSError as exc:
        say(f"relay: not starting: {exc}")
        return EXIT_FAILED
    app = create_app(settings, config, store)
    guard = ConnectionGuard(_connections(settings), settings.idle_timeout_s)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http=guard.protocol(),
            # asyncio's loop, even where uvloop is installed: AcceptFailures reads asyncio's
            # accept() error (uvloop reports it otherwise), and the suites run on asyncio
            loop="asyncio",
            timeout_keep_alive=max(1, round(settings.idle_timeout_s)),
            log_level="warning",
            log_config=None,  # uvicorn's loggers propagate to relay's handler (logs.configure)
            access_log=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
            server_header=False,
        ),
        on_exit=app.state.relay.begin_shutdown,
    )
    server.run(sockets=listeners)
    return EXIT_OK


def _printed(text: str) -> None:
    if text:
        print(text.rstrip("\n"), file=sys.stderr)


def _said_as_log_lines(text: str) -> None:
    """Why relay is not starting, as an error log line: in JSON mode nothing on stderr is
    anything but JSON."""
    logging.getLogger("relay.serve").error(text)


def _logged(diagnostics: Sequence[Diagnostic]) -> None:
    """The config's diagnostics as log lines, a warning or an error each (JSON mode)."""
    log = logging.getLogger("relay.serve")
    for diagnostic in diagnostics:
        level = logging.WARNING if diagnostic.severity == "warning" else logging.ERROR
        log.log(level, str(diagnostic))


def _connections(settings: Settings) -> int:
    """The connection limit: as set, else as many as the open-file limit allows (up to
    MAX_CONNECTIONS), after raising that limit as far as the process may."""
    open_files = raise_open_files_limit()
    if settings.max_connections is None:
        return connections_allowed(MAX_CONNECTIONS, open_files)
    if settings.max_connections > connections_allowed(settings.max_connections, open_files):
        log.warning(
            "RELAY_MAX_CONNECTIONS is more than the open-file limit allows: accepting"
            " connections will fail before it is reached",
            extra={"fields": {"max_connections": settings.max_connections,
                              "open_files": open_files}},
        )  # fmt: skip
    return settings.max_connections


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (as uvicorn binds one); OSError names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer written in two parts waits 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, telling the relay the moment a shutdown signal arrives, so the worker
    stops claiming at once and the grace period counts from the signal, not from when uvicorn
    has finished with open connections; and logging a failing accept() once a minute
    (``AcceptFailures``), not with a traceback per try."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        AcceptFailures().install(asyncio.get_running_loop())
        await super().startup(sockets)

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
