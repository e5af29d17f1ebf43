"""The Starlette application: ingest, health, metrics, the in-process worker and hot reload.

``create_app`` takes ready objects (settings, config, store); nothing here is module state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from relay.config import Config, Mode
from relay.delivery.worker import Runtime, Worker
from relay.ingest import IngestEndpoint
from relay.metrics import Metrics
from relay.reload import Reloader
from relay.settings import Settings
from relay.sinks.base import Sink, SinkContext
from relay.sinks.client import make_http_client
from relay.sinks.dryrun import DryRunSink
from relay.store.base import Store

log = logging.getLogger("relay.app")


def build_sinks(config: Config, http: httpx.AsyncClient, *, dry_run: bool) -> dict[str, Sink]:
    """A ready sink per configured sink (or its dry-run stand-in)."""
    if dry_run:
        return {name: DryRunSink(spec.type.name) for name, spec in config.sinks.items()}
    context = SinkContext(http=http)
    return {name: spec.type.build(spec.settings, context) for name, spec in config.sinks.items()}


async def close_sinks(sinks: Iterable[Sink], after_s: float) -> None:
    """Call each sink's optional ``aclose()`` (pools, connections) after ``after_s``."""
    await asyncio.sleep(after_s)
    for sink in sinks:
        aclose = getattr(sink, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:
                log.warning("closing a sink failed", extra={"fields": {"error": str(exc)}})


@dataclass
class RelayState:
    """The live, swappable part of a running relay: config and the sinks built from it."""

    settings: Settings
    config: Config
    store: Store
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    runtime: Runtime | None = None
    worker: Worker | None = None
    http: httpx.AsyncClient | None = None
    ready: bool = False
    shutdown_started: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def mode(self) -> Mode:
        return "dry-run" if self.settings.dry_run else "serve"

    def current_runtime(self) -> Runtime:
        assert self.runtime is not None, "the relay has not started"
        return self.runtime

    def apply(self, config: Config) -> None:
        """Swap in a validated config; deliveries already queued use what still exists.

        The sinks it replaces are closed once attempts already running on them have had time
        to finish (their own timeout)."""
        assert self.http is not None
        old = self.runtime
        self.config = config
        self.runtime = Runtime(
            config, build_sinks(config, self.http, dry_run=self.settings.dry_run), self.clock()
        )
        self.metrics.prepare(config)
        if old is not None:
            linger_s = max((s.settings.timeout_s for s in old.config.sinks.values()), default=0)
            self.tasks.append(asyncio.create_task(close_sinks(old.sinks.values(), linger_s + 1)))

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: stop claiming new work and start the grace clock."""
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
        if self.worker is not None:
            self.worker.begin_stop()

    def grace_left(self) -> float:
        if self.shutdown_started is None:
            return self.settings.shutdown_grace_s
        spent = time.monotonic() - self.shutdown_started
        return max(0.0, self.settings.shutdown_grace_s - spent)

    def on_delivery(self, kind: str, fields: dict[str, object]) -> None:
        self.metrics.observe_delivery(kind, dict(fields), self.clock())


def create_app(
    settings: Settings,
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The relay as an ASGI app: ingest (if ``settings.ingest``) and the worker (if set)."""
    state = RelayState(settings, config, store, clock)
    store.observe_commits(state.metrics.observe_commit)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open(upgrade=settings.db_upgrade)
        state.http = make_http_client()
        state.apply(config)
        state.metrics.observe_reload(True, clock())
        reloader = Reloader(
            settings, state.mode, state.apply, lambda ok: state.metrics.observe_reload(ok, clock())
        )
        state.tasks.append(asyncio.create_task(reloader.watch()))
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP,
                lambda: state.tasks.append(asyncio.create_task(_reload_quietly(reloader))),
            )
        if settings.worker:
            released = await store.release_all_leases()
            if released:
                log.info(
                    "released leases left by a previous run", extra={"fields": {"count": released}}
                )
            state.worker = Worker(
                store,
                state.current_runtime,
                clock=clock,
                observe=state.on_delivery,
                lease_margin_s=settings.lease_margin_s,
            )
            state.tasks.append(asyncio.create_task(state.worker.run()))
        # Everything built so far lives as long as the process: keep it out of the cyclic GC,
        # whose full passes over it otherwise stall every request in flight (tens of ms).
        gc.collect()
        gc.freeze()
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
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if state.worker is not None:
                await state.worker.stop(state.grace_left())
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            if state.runtime is not None:
                await close_sinks(state.runtime.sinks.values(), 0)
            await state.http.aclose()
            await store.close()
            log.info("relay stopped")

    def on_stored() -> None:
        if state.worker is not None:
            state.worker.wake()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            stats = await store.queue_stats(clock())
        except Exception as exc:
            return JSONResponse(
                {"status": "store_unreachable", "error": str(exc)[:200]}, status_code=503
            )
        return JSONResponse(
            {"status": "ready", "rules": len(state.config.rules), "queue_due": stats.due}
        )

    async def metrics(request: Request) -> Response:
        with contextlib.suppress(Exception):
            state.metrics.observe_queue(await store.queue_stats(clock()))
        return Response(
            state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    endpoint = None
    if settings.ingest:
        endpoint = IngestEndpoint(
            lambda: state.config,
            store,
            clock,
            on_stored,
            state.metrics.observe_event,
            body_timeout_s=settings.body_timeout_s,
        )
        # Never reached by a POST (RelayApp sends those to the endpoint): any other method on
        # any path is answered 405, as for a route that takes only POST.
        routes.append(Route("/{path:path}", endpoint, methods=["POST"]))
    app = RelayApp(endpoint, routes=routes, lifespan=lifespan)
    app.state.relay = state
    return app


class RelayApp(Starlette):
    """Every POST goes to the ingest endpoint (if this process ingests) straight from the ASGI
    scope: the hot path skips Starlette's middleware, routing, request and response objects (the
    endpoint answers an unexpected error with a 500 itself). Everything else is Starlette's."""

    def __init__(self, ingest: IngestEndpoint | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ingest is not None and scope["type"] == "http" and scope["method"] == "POST":
            await self.ingest(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _reload_quietly(reloader: Reloader) -> None:
    await reloader.reload("SIGHUP")
