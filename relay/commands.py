"""Server-side commands: ``serve``, ``worker`` and ``send-test``."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from relay import dbcli, opscli
from relay.errors import StoreError
from relay.secret import Secret
from relay.settings import Settings
from relay.store.base import Store

DEFAULT_SEND_TEST_SOURCE = "clerk"
SEND_TEST_HEADERS = {"svix": "svix", "standard-webhooks": "webhook"}  # source type → header prefix


def register(sub: Any) -> None:
    """Add the server-side subcommands to ``sub`` (an argparse subparsers action)."""
    serve = sub.add_parser("serve", help="receive webhooks and deliver them (ingest + worker)")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default: $RELAY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $RELAY_PORT or 8000)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="ingest only; run `relay worker` separately to deliver",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser(
        "worker", help="deliver stored events (no ingest endpoint; /healthz on --port)"
    )
    _common(worker)
    worker.add_argument("--host", help="address for /healthz (default: 127.0.0.1)")
    worker.add_argument("--port", type=int, default=8001, help="port for /healthz (default 8001)")
    worker.set_defaults(handler=cmd_worker)

    send = sub.add_parser("send-test", help="sign a sample event and post it to a running relay")
    send.add_argument("event", help="an event type (e.g. user.created) or an event JSON file")
    send.add_argument(
        "--url", help="where to post (default: the source's path on http://$RELAY_HOST:$RELAY_PORT)"
    )
    send.add_argument(
        "--source",
        default=DEFAULT_SEND_TEST_SOURCE,
        help="the source whose secret signs it (default: clerk)",
    )
    send.add_argument("--rules", type=Path)
    send.add_argument("--templates", type=Path)
    send.add_argument("--samples", type=Path)
    send.set_defaults(handler=cmd_send_test)
    dbcli.register(sub)
    opscli.register(sub)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", type=Path, help="rules file (default: rules.yaml)")
    parser.add_argument("--templates", type=Path, help="templates folder (default: templates)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="render and log what sinks would send; send nothing (signature verification stays on)",
    )


def _settings(args: argparse.Namespace, **changes: Any) -> Settings:
    from relay.cli import settings_for

    return settings_for(args).with_(dry_run=args.dry_run, **changes)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(
        args, host=args.host, port=args.port, worker=False if args.no_worker else None
    )
    return _run(settings)


def cmd_worker(args: argparse.Namespace) -> int:
    return _run(_settings(args, ingest=False, host=args.host, port=args.port))


def _run(settings: Settings) -> int:
    from relay import logs
    from relay.app import create_app
    from relay.cli import load
    from relay.store import open_store

    logs.configure(settings.log_format, logs.level(settings.log_level))
    config = load(settings, "dry-run" if settings.dry_run else "serve", sys.stderr)
    if config is None:
        print(
            "relay: not starting: fix the errors above (`relay check` shows them too)",
            file=sys.stderr,
        )
        return 1
    try:
        store = open_store(settings.database_url)
    except ValueError as exc:
        print(f"relay: RELAY_DATABASE_URL: {exc}", file=sys.stderr)
        return 2
    problem = asyncio.run(_preflight(store, settings))
    if problem:
        print(f"relay: not starting: {problem}", file=sys.stderr)
        return 1
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
    return 0


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


async def _preflight(store: Store, settings: Settings) -> str | None:
    """Open and close the store once, so a bad database is one clear line, not a traceback."""
    try:
        await store.open(upgrade=settings.db_upgrade)
    except StoreError as exc:
        return str(exc)
    await store.close()
    return None


def cmd_send_test(args: argparse.Namespace) -> int:
    import httpx

    from relay.cli import load, settings_for
    from relay.samples import load_samples, parse_event
    from relay.sources.standard_webhooks import signing_secret
    from relay.verify import sign

    settings = settings_for(args)
    config = load(settings, "check", sys.stderr, warnings=False)
    if config is None:
        return 1
    source = config.sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(config.sources))
        print(f"relay send-test: no source '{args.source}' (sources: {known})", file=sys.stderr)
        return 2
    prefix = SEND_TEST_HEADERS.get(source.type.name)
    if prefix is None:
        print(
            f"relay send-test: source '{source.name}' is a {source.type.name} source; send-test "
            "supports svix and standard-webhooks sources",
            file=sys.stderr,
        )
        return 2
    secret = getattr(source.settings, "secret", None)
    if not source.complete or not isinstance(secret, Secret):
        print(
            f"relay send-test: source '{source.name}' has no signing secret (set the variable "
            f"its secret names in {settings.rules_path})",
            file=sys.stderr,
        )
        return 1
    path = Path(args.event)
    if path.suffix == ".json" or path.exists():
        try:
            body = path.read_bytes()
        except OSError as exc:
            print(f"relay send-test: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        _, problem = parse_event(body.decode("utf-8", "replace"), str(path))
        if problem:
            print(problem, file=sys.stderr)
            return 2
    else:
        samples, _ = load_samples(settings.samples_dir)
        found = [s for s in samples if s.event.get("type") == args.event]
        if not found:
            print(
                f"relay send-test: no sample event of type {args.event} in "
                f"{settings.samples_dir}/ (pass a JSON file instead)",
                file=sys.stderr,
            )
            return 2
        body = json.dumps(found[0].event).encode()
    url = args.url or f"http://{settings.host}:{settings.port}{source.path}"
    msg_id = f"msg_{secrets.token_hex(12)}"
    timestamp = int(time.time())
    headers = {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": sign(signing_secret(secret), msg_id, timestamp, body),
        "content-type": "application/json",
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        print(
            f"relay send-test: cannot reach {url}: {exc} (is `relay serve` running?)",
            file=sys.stderr,
        )
        return 1
    print(f"POST {url} {prefix}-id={msg_id}")
    print(f"{response.status_code} {response.text}")
    return 0 if response.is_success else 1
