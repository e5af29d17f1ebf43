"""The Starlette application: ingest, health and metrics over a ``RelayState``.

``create_app`` takes ready objects (settings, config, store); nothing here is module state. What
starts and stops with the app (store, sinks, worker, hot reload) is ``relay.lifespan``'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from relay.config import Config
from relay.ingest import IngestEndpoint
from relay.lifespan import RelayState, lifespan
from relay.settings import Settings
from relay.store.base import Store


def create_app(
    settings: Settings,
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The relay as an ASGI app: ingest (if ``settings.ingest``) and the worker (if set)."""
    state = RelayState(settings, config, store, clock)
    store.observe_commits(state.metrics.commit)

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
            stats = await store.queue_stats(clock())
            state.metrics.queue(stats.due, stats.pending_total, stats.oldest_due_age_s)
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
            state.stored,
            state.metrics,
            body_timeout_s=settings.body_timeout_s,
        )
        # Never reached by a POST (RelayApp sends those to the endpoint): any other method on
        # any path is answered 405, as for a route that takes only POST.
        routes.append(Route("/{path:path}", endpoint, methods=["POST"]))
    app = RelayApp(endpoint, routes=routes, lifespan=lifespan(state))
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
