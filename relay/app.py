"""The Starlette application: ingest routes per source, health, and the in-process worker.

``create_app`` takes ready objects (settings, config, store); nothing here is module state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.config import Config
from relay.delivery.worker import Runtime, Worker
from relay.ingest import IngestEndpoint
from relay.settings import Settings
from relay.sinks.base import Sink, SinkContext
from relay.sinks.dryrun import DryRunSink
from relay.store.base import Store

log = logging.getLogger("relay.app")
SHUTDOWN_GRACE_S = 10.0


def build_sinks(config: Config, http: httpx.AsyncClient, *, dry_run: bool) -> dict[str, Sink]:
    """A ready sink per configured sink (or its dry-run stand-in)."""
    if dry_run:
        return {name: DryRunSink(spec.type.name) for name, spec in config.sinks.items()}
    context = SinkContext(http=http)
    return {name: spec.type.build(spec.settings, context) for name, spec in config.sinks.items()}


def make_http_client() -> httpx.AsyncClient:
    """The one outbound client every sink shares: no redirects, bounded pool."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": "relay/0.1"},
    )


@dataclass
class RelayState:
    """The live, swappable part of a running relay: config and the sinks built from it."""

    settings: Settings
    config: Config
    store: Store
    clock: Callable[[], float] = time.time
    runtime: Runtime | None = None
    worker: Worker | None = None
    http: httpx.AsyncClient | None = None
    ready: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def current_runtime(self) -> Runtime:
        assert self.runtime is not None, "the relay has not started"
        return self.runtime


def create_app(
    settings: Settings,
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The relay as an ASGI app: ingest (if ``settings.ingest``) and the worker (if set)."""
    state = RelayState(settings, config, store, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        state.http = make_http_client()
        state.runtime = Runtime(config, build_sinks(config, state.http, dry_run=settings.dry_run))
        if settings.worker:
            released = await store.release_all_leases()
            if released:
                log.info(
                    "released leases left by a previous run", extra={"fields": {"count": released}}
                )
            state.worker = Worker(store, state.current_runtime, clock=clock)
            state._task = asyncio.create_task(state.worker.run())
        state.ready = True
        log.info(
            "relay started",
            extra={
                "fields": {
                    "sources": {s.name: s.path for s in config.sources.values()},
                    "sinks": sorted(config.sinks),
                    "rules": len(config.rules),
                    "worker": settings.worker,
                    "ingest": settings.ingest,
                    "dry_run": settings.dry_run,
                }
            },
        )
        try:
            yield
        finally:
            state.ready = False
            if state.worker is not None and state._task is not None:
                await state.worker.stop(SHUTDOWN_GRACE_S)
                state._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state._task
            await state.http.aclose()
            await store.close()
            log.info("relay stopped")

    def on_stored() -> None:
        if state.worker is not None:
            state.worker.wake()

    routes = []
    if settings.ingest:
        for source in config.sources.values():
            endpoint = IngestEndpoint(source.name, lambda: state.config, store, clock, on_stored)
            routes.append(Route(source.path, endpoint.handle, methods=["POST"]))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.relay = state
    return app
