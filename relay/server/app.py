"""The Starlette application: ingest, the one-click unsubscribe links
(``relay.server.unsubscribe``) and the ops endpoints (``relay.server.ops``), over a
``RelayState``.

``create_app`` takes ready objects (settings, config, store); nothing here is module state. What
starts and stops with the app (store, sinks, worker, hot reload) is ``relay.server.lifespan``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from relay.config import Config
from relay.ingest import IngestEndpoint
from relay.server.lifespan import RelayState, lifespan
from relay.server.ops import Ops
from relay.server.unsubscribe import PATH, UnsubscribeEndpoint
from relay.settings import Settings
from relay.store.base import Store


def create_app(
    settings: Settings,
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The relay as an ASGI app: ingest and the unsubscribe links (if ``settings.ingest``) and
    the worker (if set); the ops endpoints (``relay.server.ops``) on the ops port when
    ``settings.ops_port`` is set, else beside."""
    state = RelayState(settings, config, store, clock)
    store.observe_commits(state.metrics.commit)
    ops = Ops(state)
    routes = [
        Route("/healthz", ops.healthz),
        Route("/readyz", ops.readyz),
        Route("/metrics", ops.metrics),
    ]
    endpoint = unsubscribe = None
    if settings.ingest:
        unsubscribe = UnsubscribeEndpoint(
            lambda: state.config,
            store,
            clock,
            state.metrics,
            body_timeout_s=settings.body_timeout_s,
        )
        endpoint = IngestEndpoint(
            lambda: state.config,
            store,
            clock,
            state.stored,
            state.metrics,
            body_timeout_s=settings.body_timeout_s,
            health=state.health,
            budget=state.budget,
        )
        # Never reached by a POST (RelayApp sends those to the endpoint): any other method on
        # any path is answered 405, as for a route that takes only POST.
        routes.append(Route("/{path:path}", endpoint, methods=["POST"]))
    app = RelayApp(endpoint, settings.ops_port, routes=routes, lifespan=lifespan(state))
    app.unsubscribe = unsubscribe
    app.state.relay = state
    app.state.ops = ops
    return app


class RelayApp(Starlette):
    """Every POST goes to the ingest endpoint (if this process ingests) straight from the ASGI
    scope: the hot path skips Starlette's middleware, routing, request and response objects (the
    endpoint answers an unexpected error with a 500 itself). Everything else is Starlette's.

    With an ops port, a request is served by what its listener carries (the local port it came
    in on): the ops port only the ops endpoints, the public port only the webhooks and the
    unsubscribe links under ``/unsubscribe/`` (anything else there is 404, so the public cannot
    reach /metrics or /readyz)."""

    unsubscribe: UnsubscribeEndpoint | None = None

    def __init__(self, ingest: IngestEndpoint | None, ops_port: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.ops_port = ops_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            port = (scope.get("server") or ("", None))[1]  # the listener's local port
            on_ops = self.ops_port is not None and port == self.ops_port
            if self.unsubscribe is not None and not on_ops and scope["path"].startswith(PATH):
                await self.unsubscribe(scope, receive, send)
                return
            if scope["method"] == "POST" and not on_ops and self.ingest is not None:
                await self.ingest(scope, receive, send)
                return
            if self.ops_port is not None and (scope["method"] == "POST" or not on_ops):
                await _NOT_FOUND(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_NOT_FOUND = JSONResponse({"status": "not_found"}, status_code=404)
