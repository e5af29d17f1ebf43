"""The one-click unsubscribe endpoint: ``/unsubscribe/<token>`` on the public port.

- ``POST`` (RFC 8058): what a mailbox provider sends when its user clicks "unsubscribe", and what
  the page's button sends. A valid token (``relay.recipients.tokens``) adds its address to the
  suppression list for its category (reason ``unsubscribed``) at once and answers ``200``, also
  when the address already was: no cookie, no confirmation, no session. The body
  (``List-Unsubscribe=One-Click``) is read, up to ``MAX_BODY_BYTES``, and not required.
- ``GET``: a small page saying what the button does (mail scanners fetch every link in an email,
  so a ``GET`` changes nothing). No JavaScript; what it shows is autoescaped.
- A token that is not one relay made with a secret it has (forged, cut short, edited to another
  category or address, made with a retired secret) is ``400``, the same page whatever the
  fault, and nothing changes. Checking it needs no database.

Where it is served: by a relay that serves the webhooks (``relay serve``), on the public port
(``relay.server.app``): the people who got the email reach it where the senders of webhooks
do. Never on the ops port, nor by ``relay worker``, which serve only operators. Without a usable
``RELAY_UNSUBSCRIBE_SECRET`` (or with ``relay check``'s placeholder links) it answers ``404``.
Every answer forbids caching, framing, scripts and sending the URL on as a referrer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import jinja2
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from relay import logs
from relay.config import Config
from relay.errors import StoreError
from relay.metrics import Metrics, UnsubscribeOutcome
from relay.recipients.addresses import Reason, Suppression, SuppressionList
from relay.recipients.links import PATH

__all__ = ["PATH", "UnsubscribeEndpoint"]

log = logging.getLogger("relay.unsubscribe")

MAX_BODY_BYTES = 4096
HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
}
_PAGE = jinja2.Environment(autoescape=True).from_string("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
button{font:inherit;padding:.5rem 1.25rem;cursor:pointer}</style></head>
<body><h1>{{ title }}</h1><p>{{ text }}</p>
{%- if form %}
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>
{%- endif %}
</body></html>
""")


def _page(
    status: int, title: str, text: str, *, form: bool = False, close: bool = False
) -> Response:
    body = _PAGE.render(title=title, text=text, form=form)
    headers = {**HEADERS, "connection": "close"} if close else HEADERS
    return HTMLResponse(body, status_code=status, headers=headers)


REFUSED = (
    "This unsubscribe link is not valid: it may have been cut short when it was copied. Use the"
    " link in the email itself, or reply to the email and ask."
)


class UnsubscribeEndpoint:
    """The ASGI endpoint under ``PATH``, over the relay's current config and its store."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: SuppressionList,
        clock: Callable[[], float],
        metrics: Metrics,
        *,
        body_timeout_s: float,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.answer(scope, receive)
        await response(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive) -> Response:
        links = self.config().unsubscribe
        method = str(scope["method"])
        if links is None or links.placeholder:
            return JSONResponse({"status": "not_found"}, status_code=404)
        if method not in ("GET", "HEAD", "POST"):
            allow = {"allow": "GET, HEAD, POST", **HEADERS}
            return Response(status_code=405, headers=allow)
        found = links.read(str(scope["path"])[len(PATH) :])
        kind = "POST" if method == "POST" else "GET"
        unread = await self._read_body(receive) if method == "POST" else None
        if unread is not None:
            return unread
        if found is None:
            self.metrics.unsubscribe_request(kind, "refused")
            return _page(400, "Not a valid link", REFUSED)
        address, category = found
        if method != "POST":
            self.metrics.unsubscribe_request(kind, "shown")
            text = f"Stop sending {category} emails to {address}?"
            return _page(200, "Unsubscribe", text, form=True)
        try:
            added = await self.store.add_suppression(
                Suppression(address, category, Reason.UNSUBSCRIBED, None, self.clock())
            )
        except StoreError as exc:
            fields = {"category": category, "error": str(exc)}
            logs.emit(log, logging.ERROR, "unsubscribe failed: the store did not commit", fields)
            return _page(503, "Try again", "That did not work just now: please try again.")
        outcome: UnsubscribeOutcome = "unsubscribed" if added else "already"
        self.metrics.unsubscribe_request(kind, outcome)
        fields = {"address": address, "category": category, "outcome": outcome}
        logs.emit(log, logging.INFO, "unsubscribed", fields)
        text = f"{address} will get no more {category} emails."
        return _page(200, "Unsubscribed", text)

    async def _read_body(self, receive: Receive) -> Response | None:
        """Read the body (``List-Unsubscribe=One-Click``, not needed): None once it is read,
        else the answer to a body larger than ``MAX_BODY_BYTES`` (413) or slower than the body
        timeout (408); the connection is then closed without reading the rest."""
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    size += len(message.get("body", b""))
                    if size > MAX_BODY_BYTES:
                        return _page(413, "Too large", "An unsubscribe needs no body.", close=True)
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return None  # read, or the client is gone (then nobody reads the answer)
        except TimeoutError:
            return _page(408, "Too slow", "The request did not arrive in time.", close=True)
