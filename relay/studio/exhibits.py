"""What a previewed send looks like to the one who gets it: an email (from, to, subject, its HTML
and its text part), a Slack message (its blocks, drawn), an HTTP request (method, URL, headers,
JSON body) or a SQL statement with its parameters; any other sink type as ``relay preview``'s
labelled lines.

An exhibit is a plain mapping the page's template draws (``kind`` says which). It is built from
``preview``'s ``PreviewSend`` and the sink's settings, and shows no secret: every string the
config knows as a secret is redacted, configured header values are masked whatever they hold,
and a URL shows no password or token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from relay.config import SinkSpec
from relay.config.samples import PreviewSend
from relay.delivery.snapshot import redacted
from relay.errors import PermanentError
from relay.recipients.addresses import addresses
from relay.secret import redact
from relay.sinks.slack import validate_blocks
from relay.store import redact_url

__all__ = ["exhibit"]

MASK = "••••••"
Exhibit = dict[str, Any]


def exhibit(send: PreviewSend, spec: SinkSpec, secrets: frozenset[str]) -> Exhibit:
    """How ``send`` would look, drawn for its sink type (``kind``), with no secret in it."""
    if send.payload is None:
        return {"kind": "error", "error": redact(send.error or "it did not render", secrets)}
    payload = redacted(send.payload, secrets)
    draw = _KINDS.get(spec.type.name)
    if draw is None:
        lines = [(label, redact(text, secrets)) for label, text in send.lines]
        return {"kind": "other", "lines": lines}
    return draw(payload, spec.settings, secrets)


def _email(payload: Mapping[str, Any], settings: Any, secrets: frozenset[str]) -> Exhibit:
    def listed(key: str, default: Any = None) -> str:
        return ", ".join(addresses(payload.get(key) or default))

    return {
        "kind": "email",
        "from": payload.get("from") or getattr(settings, "from_", None) or "",
        "to": listed("to"),
        "cc": listed("cc"),
        "bcc": listed("bcc"),
        "reply_to": listed("reply_to", getattr(settings, "reply_to", None)),
        "subject": str(payload.get("subject", "")),
        "headers": sorted((payload.get("headers") or {}).items()),  # List-Unsubscribe, ...
        "html": payload.get("html") or "",
        "text": payload.get("text") or "",
    }


def _slack(payload: Mapping[str, Any], settings: Any, secrets: frozenset[str]) -> Exhibit:
    blocks, problem = payload.get("blocks"), None
    if blocks is not None:
        try:
            validate_blocks(blocks)
        except PermanentError as exc:
            problem = f"Slack would refuse this message: {exc}"
    channel = getattr(settings, "channel", None)
    return {
        "kind": "slack",
        "text": str(payload.get("text", "")),
        "blocks": blocks if isinstance(blocks, list) else None,
        "problem": problem,
        "channel": channel or "the incoming webhook's channel",
    }


def _http(payload: Mapping[str, Any], settings: Any, secrets: frozenset[str]) -> Exhibit:
    configured = getattr(settings, "headers", None) or {}
    headers = [(name, MASK) for name in configured]  # any of them may be a credential
    headers += [("Content-Type", "application/json"), ("Idempotency-Key", "(one per delivery)")]
    if getattr(settings, "signing_secret", None):
        headers += [(name, "(signed at send time)") for name in
                    ("webhook-id", "webhook-timestamp", "webhook-signature")]  # fmt: skip
    body = payload.get("body", "(the event envelope, unchanged)")
    url = str(getattr(settings, "url", "") or "")
    return {
        "kind": "http",
        "method": getattr(settings, "method", "POST"),
        "url": redact_url(redact(url, secrets)) or "(not set)",  # no token, no password
        "headers": headers,
        "body": body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False),
    }


def _sql(payload: Mapping[str, Any], settings: Any, secrets: frozenset[str]) -> Exhibit:
    params = payload.get("params") or {}
    return {
        "kind": "sql",
        "statement": str(payload.get("sql", "")).strip(),
        "params": [
            (name, json.dumps(value, ensure_ascii=False, default=str))
            for name, value in params.items()
        ],
    }


_KINDS: dict[str, Callable[[Mapping[str, Any], Any, frozenset[str]], Exhibit]] = {
    "resend": _email,
    "slack": _slack,
    "http": _http,
    "sql": _sql,
}
