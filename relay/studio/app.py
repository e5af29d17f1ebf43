"""The studio's web app: one server-rendered page (Jinja, autoescaped) and a small script that
keeps it live.

Routes: ``/`` the page; ``/fragment`` the part of it that changes (the same query); ``/fingerprint``
what the script polls to know a file changed; ``POST /events`` a pasted or dropped event;
``/static/`` the script and the style sheet. ``?event=`` picks the event shown: ``sample:NAME``,
``pasted:N`` or ``stored:ID`` (with a delivery log). The app only reads: files, and the log
through ``DeliveryLog.get_event``. It answers only to a local Host header (a web page elsewhere
cannot read it through DNS rebinding) and its pages allow no script but its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.settings import Settings
from relay.store.base import DeliveryLog
from relay.studio import slack
from relay.studio.workspace import MAX_EVENT_BYTES, Loaded, Workspace

__all__ = ["create_studio_app"]

HERE = Path(__file__).parent
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src * data:;"
    " connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'"
)


def create_studio_app(
    settings: Settings, *, log: DeliveryLog | None = None, host: str = "127.0.0.1"
) -> Starlette:
    """The studio for the project ``settings`` names; ``log`` (opened by the app's lifespan)
    lets it show stored events by id."""
    workspace = Workspace(settings)
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    pages.filters.update(mrkdwn=slack.mrkdwn, plain=slack.plain)

    async def context(request: Request) -> dict[str, Any]:
        loaded = await asyncio.to_thread(workspace.loaded)
        events = workspace.events(loaded)
        query = request.query_params
        key = query.get("event") or (f"stored:{query['stored']}" if query.get("stored") else "")
        key = key or (events[0][0] if events else "")
        stored = await _stored(log, key)
        shown = await asyncio.to_thread(workspace.show, loaded, key, stored)
        matrix = await asyncio.to_thread(workspace.matrix, loaded, events)
        return {
            "settings": settings,
            "loaded": loaded,
            "rules": [] if loaded.config is None else [r.name for r in loaded.config.rules],
            "matrix": matrix,
            "shown": shown,
            "has_log": log is not None,
        }

    def page(name: str, values: Mapping[str, Any], loaded: Loaded) -> HTMLResponse:
        headers = {"Content-Security-Policy": CSP, "X-Studio-Fingerprint": loaded.fingerprint}
        headers["Cache-Control"] = "no-store"
        return HTMLResponse(pages.get_template(name).render(values), headers=headers)

    async def index(request: Request) -> Response:
        values = await context(request)
        return page("page.html", values, values["loaded"])

    async def fragment(request: Request) -> Response:
        values = await context(request)
        return page("fragment.html", values, values["loaded"])

    async def current(request: Request) -> Response:
        value = await asyncio.to_thread(workspace.fingerprint)
        return JSONResponse({"fingerprint": value}, headers={"Cache-Control": "no-store"})

    async def paste(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            return JSONResponse({"error": "an event is at most 1 MiB"}, status_code=413)
        key, problem = workspace.paste(body.decode("utf-8", "replace"))
        if key is None:
            return JSONResponse({"error": str(problem)}, status_code=400)
        return JSONResponse({"event": key})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if log is not None:
            await log.open(create=False)
        try:
            yield
        finally:
            if log is not None:
                await log.close()

    hosts = ["*"] if host in ("0.0.0.0", "::", "") else [*LOCAL_HOSTS, host]  # noqa: S104
    return Starlette(
        routes=[
            Route("/", index),
            Route("/fragment", fragment),
            Route("/fingerprint", current),
            Route("/events", paste, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        lifespan=lifespan,
    )


async def _stored(log: DeliveryLog | None, key: str) -> Mapping[str, Any] | None:
    """The stored event ``stored:ID`` names, read from the log (None without one)."""
    kind, _, event_id = key.partition(":")
    if kind != "stored" or log is None or not event_id:
        return None
    record = await log.get_event(event_id)
    if record is None:
        return None
    try:
        body = json.loads(record.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
