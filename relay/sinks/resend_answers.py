"""Resend's answers, judged by their status first (the Resend sink's adapter calls ``judge`` before
resend parses anything).

resend itself reports a 2xx it cannot read as an invented 500, and returns whatever JSON a 2xx
carries (``{}`` included) as a sent email. Here, only a 2xx whose JSON object has an email ``id``
is a delivery; any other 2xx is a retryable protocol error that quotes what was received. Of
Resend's two idempotency 409s, ``concurrent_idempotent_requests`` (the same key still in
progress, as when relay's deadline cut the first attempt short) is retried after
``CONCURRENT_RETRY_S``; ``invalid_idempotent_request`` (the same key with another payload) is
permanent, as is any other 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from relay.errors import RetryableError
from relay.sinks import httpcheck

__all__ = ["CONCURRENT_RETRY_S", "WHAT", "judge"]

WHAT = "send email via Resend"
CONCURRENT_RETRY_S = 10.0  # Resend is still working on the same idempotency key: ask again soon


def judge(status: int, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> None:
    """Return if Resend's answer is a sent email (a 2xx whose JSON object has an ``id``); else
    raise the DeliveryError it means, judged by its status first and quoting what was received."""
    try:
        data = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        data = None
    phrase = f"{status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    if not 200 <= status < 300:
        name = data.get("name") if isinstance(data, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        detail = f"{name}: {message}" if isinstance(name, str) else body.decode("utf-8", "replace")
        detail = httpcheck.excerpt(detail, secrets)
        if status == 409 and name == "concurrent_idempotent_requests":
            raise RetryableError(
                f"{WHAT}: {phrase}: {detail}, retry in {CONCURRENT_RETRY_S:g} s",
                status=status,
                retry_after_s=CONCURRENT_RETRY_S,
            )
        httpcheck.classify_status(WHAT, status, headers, detail)
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
        return
    received = httpcheck.excerpt(body, secrets) or "an empty body"
    kind = httpcheck.header(headers, "content-type") or "no content type"
    raise RetryableError(
        f"{WHAT}: {phrase}, but not Resend's answer (no email id): received {received} ({kind})",
        status=status,
    )
