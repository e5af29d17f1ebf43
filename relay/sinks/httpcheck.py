"""HTTP helpers for sinks: classify a response, parse Retry-After, translate transport errors.

Every error text says what was attempted (``what``, e.g. ``"post to Slack"``) and never carries a
secret: callers name the secrets to redact, response bodies are read at most ``MAX_BODY_BYTES`` and
quoted at most ``EXCERPT_CHARS`` characters.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC

import httpx

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.secret import redact

__all__ = [
    "EXCERPT_CHARS",
    "MAX_BODY_BYTES",
    "check_http_url",
    "classify_status",
    "display_url",
    "excerpt",
    "header",
    "parse_retry_after",
    "read_bounded",
    "send_bounded",
    "send_checked",
    "status_error",
    "translate_transport_error",
]

MAX_BODY_BYTES = 64 * 1024
EXCERPT_CHARS = 200
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_SECONDS = re.compile(r"\d+(\.\d+)?")


def check_http_url(value: str) -> httpx.URL:
    """``value`` as an absolute http(s) URL with a host, or ValueError (which never quotes it)."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


def display_url(url: httpx.URL, *, path: bool = True) -> str:
    """``url`` safe for error texts: no userinfo, query or fragment, and the path only if asked."""
    port = f":{url.port}" if url.port is not None else ""
    shown = f"{url.scheme}://{url.host}{port}"
    return shown + url.path if path else shown


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any mapping, looked up case-insensitively."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def excerpt(body: bytes | str, secrets: Iterable[str] = ()) -> str:
    """A one-line, redacted excerpt of a response body of at most ``EXCERPT_CHARS`` characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = redact(" ".join(text.split()), secrets)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _seconds(value: float) -> str:
    return str(math.ceil(value)) if value >= 1 else f"{value:.1f}".rstrip("0").rstrip(".")


def status_error(
    what: str, status: int, headers: Mapping[str, str], body_excerpt: str
) -> DeliveryError | None:
    """The error an HTTP status means: None (2xx), RetryableError (408, 425, 429, 5xx; with the
    Retry-After delay if given) or PermanentError (anything else; 3xx too, as redirects are never
    followed: the configured URL must be the final one)."""
    if 200 <= status < 300:
        return None
    phrase = httpx.codes.get_reason_phrase(status)
    text = f"{what}: {status} {phrase}".rstrip()
    if 300 <= status < 400:
        text += ", redirects are not followed"
    if body_excerpt:
        text += f": {body_excerpt}"
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        retry_after_s = parse_retry_after(header(headers, "retry-after"))
        if retry_after_s is not None:
            text += f", retry in {_seconds(retry_after_s)} s"
        return RetryableError(text, status=status, retry_after_s=retry_after_s)
    return PermanentError(text, status=status)


def classify_status(what: str, status: int, headers: Mapping[str, str], body_excerpt: str) -> None:
    """Return for a 2xx, else raise the ``status_error`` for the status."""
    error = status_error(what, status, headers, body_excerpt)
    if error is not None:
        raise error


def _timeout_of(exc: httpx.TimeoutException) -> float | None:
    phase = {
        httpx.ConnectTimeout: "connect",
        httpx.ReadTimeout: "read",
        httpx.WriteTimeout: "write",
        httpx.PoolTimeout: "pool",
    }.get(type(exc), "read")
    try:
        timeouts = exc.request.extensions.get("timeout", {})
    except RuntimeError:  # the exception was raised without its request
        return None
    value = timeouts.get(phase) if isinstance(timeouts, dict) else None
    return float(value) if isinstance(value, int | float) else None


def translate_transport_error(
    what: str,
    exc: httpx.HTTPError,
    *,
    timeout_s: float | None = None,
    secrets: Iterable[str] = (),
) -> RetryableError:
    """A retryable error for a failed exchange: timeout, refused or reset connection, bad reply."""
    if isinstance(exc, httpx.TimeoutException):
        seconds = timeout_s if timeout_s is not None else _timeout_of(exc)
        after = f" after {_seconds(seconds)} s" if seconds is not None else ""
        return RetryableError(f"{what}: timed out{after}")
    if isinstance(exc, httpx.ConnectError):
        kind = "connection failed"
    elif isinstance(exc, httpx.RemoteProtocolError):
        kind = "connection closed or reset by the server"
    elif isinstance(exc, httpx.NetworkError):
        kind = "network error"
    else:
        kind = f"request failed ({type(exc).__name__})"
    detail = excerpt(str(exc), secrets)
    return RetryableError(f"{what}: {kind}: {detail}" if detail else f"{what}: {kind}")


async def read_bounded(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """At most ``limit`` bytes of a streamed response body; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def send_bounded(
    client: httpx.AsyncClient, request: httpx.Request, limit: int = MAX_BODY_BYTES
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` without following redirects; the response and at most ``limit`` bytes.

    Transport failures propagate as ``httpx.HTTPError``: translate them where the call is made.
    """
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        body = await read_bounded(response, limit)
    finally:
        await response.aclose()
    return response, body


async def send_checked(
    client: httpx.AsyncClient,
    request: httpx.Request,
    what: str,
    *,
    timeout_s: float,
    secrets: Iterable[str] = (),
) -> tuple[httpx.Response, bytes]:
    """``send_bounded``, with a transport failure raised as the sink's retryable error."""
    try:
        return await send_bounded(client, request)
    except httpx.HTTPError as exc:
        raise translate_transport_error(what, exc, timeout_s=timeout_s, secrets=secrets) from exc
