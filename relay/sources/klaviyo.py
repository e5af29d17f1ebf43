"""``verify: klaviyo``: Klaviyo system webhooks, several events per request.

Headers: ``Klaviyo-Webhook-Id``, ``Klaviyo-Timestamp`` and ``Klaviyo-Signature`` (hex HMAC-SHA256
keyed by the endpoint's secret key; see ``signed_content`` for what is signed). The body is
``{"data": [{"external_id", "topic", "payload"}, ...], "meta": {"klaviyo_webhook_id", ...}}``;
``meta.klaviyo_webhook_id`` must equal the header (Klaviyo's docs: a mismatch means the request
must not be processed). Each item becomes its own event, deduplicated on ``external_id`` and
routed on ``topic``, with the envelope
``{"type": topic, "id": external_id, "data": payload, "meta": meta}``.

Replay window: ``Klaviyo-Timestamp`` must be within ``tolerance_s`` (default 300) of now. Klaviyo's
own example request sends an HTTP date (``Tue, 16 Jan 2024 14:23:50 GMT``); a plain integer (Unix
seconds; milliseconds if it is larger than 10^11) and an ISO 8601 time with its offset are read
too. A timestamp in any other form is refused: its age could not be checked. The value is signed
as received, whatever its form.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from relay.errors import EventShapeError, VerificationError
from relay.secret import Secret
from relay.sources.base import (
    Freshness,
    InboundEvent,
    RawSecret,
    SourceContext,
    SourceSettings,
    SourceType,
    blank_to_none,
    check_id,
    check_type,
    encode_event,
    parse_json,
    pick_headers,
    require_header,
)

__all__ = ["SOURCE", "KlaviyoSettings", "KlaviyoSource", "sign", "signed_content", "unix_seconds"]

ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = (
    "klaviyo-webhook-id",
    "klaviyo-timestamp",
    "klaviyo-signature",
)
_TIMESTAMP = re.compile(r"[\x20-\x7e]{1,64}")  # printable ASCII; an HTTP date has spaces
_UNIX = re.compile(r"0|[1-9][0-9]{0,15}")
_HEX_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
MS_THRESHOLD = 10**11  # a Unix time above this is in milliseconds (10^11 s is the year 5138)


def signed_content(body: bytes, timestamp: str) -> bytes:
    """What Klaviyo signs: the raw body followed directly by the ``Klaviyo-Timestamp`` header value
    (as received), with no separator; the HMAC key is the secret's UTF-8 bytes; hex digest.

    Where this comes from: Klaviyo's page (developers.klaviyo.com/en/docs/
    working_with_system_webhooks) documents the three headers, the body and the meta check, and
    calls Klaviyo-Signature an HMAC-SHA256 signature; its verification section itself could not be
    read when this was written. The layout above is the one independent verifiers agree on
    (Hookdeck's klaviyo-webhooks skill: "raw body first, then Klaviyo-Timestamp", the Rust
    webhook-verify crate, a PHP Klaviyo client's tests). It is pinned by a self-made test vector
    in tests/sources/test_klaviyo.py, not by one published by Klaviyo: if real requests fail with
    "no matching signature", this function is the one place to correct.
    """
    return body + timestamp.encode("ascii")


def sign(secret: Secret, body: bytes, timestamp: str) -> str:
    """The ``Klaviyo-Signature`` value for ``body`` sent at ``timestamp`` (for tests and tools)."""
    key = secret.reveal().encode()
    return hmac.new(key, signed_content(body, timestamp), hashlib.sha256).hexdigest()


class KlaviyoSettings(SourceSettings):
    """``verify: klaviyo``: the webhook's ``secret`` (its secret key), ``previous_secret`` while
    rotating, and ``tolerance_s``: how far ``Klaviyo-Timestamp`` may be from now."""

    secret: RawSecret
    previous_secret: RawSecret | None = None
    tolerance_s: int = Field(default=300, ge=1, le=7 * 24 * 3600)

    _blank_previous = field_validator("previous_secret", mode="before")(blank_to_none)


class KlaviyoSource:
    """Verifies a Klaviyo request and splits its batch into one event per item."""

    def __init__(self, settings: KlaviyoSettings, context: SourceContext) -> None:
        secrets = [settings.secret, settings.previous_secret]
        self._keys = tuple(s.reveal().encode() for s in secrets if s is not None)
        self._fresh = Freshness(settings.tolerance_s, context.clock)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        found = pick_headers(headers, {ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER})
        webhook_id = require_header(found, ID_HEADER)
        timestamp = require_header(found, TIMESTAMP_HEADER)
        signature = require_header(found, SIGNATURE_HEADER)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise VerificationError(f"{TIMESTAMP_HEADER} header has invalid characters")
        self._fresh.check(unix_seconds(timestamp))
        if not _HEX_SHA256.fullmatch(signature):
            raise VerificationError(f"{SIGNATURE_HEADER} header is not a hex HMAC-SHA256")
        given = bytes.fromhex(signature)
        content = signed_content(body, timestamp)
        digests = [hmac.new(key, content, hashlib.sha256).digest() for key in self._keys]
        if not any([hmac.compare_digest(given, digest) for digest in digests]):
            raise VerificationError("no matching signature")

        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise EventShapeError("body is not a JSON object", reason="bad_json")
        meta = doc.get("meta")
        if not isinstance(meta, dict) or not isinstance(meta.get("klaviyo_webhook_id"), str):
            raise EventShapeError("body has no meta.klaviyo_webhook_id")
        if meta["klaviyo_webhook_id"] != webhook_id:
            raise VerificationError(
                f"meta.klaviyo_webhook_id does not match the {ID_HEADER} header"
            )
        items = doc.get("data")
        if not isinstance(items, list):
            raise EventShapeError("body has no data list")
        return [_event(i, item, meta) for i, item in enumerate(items)]


def unix_seconds(timestamp: str) -> int:
    """The Unix time a ``Klaviyo-Timestamp`` value names: Unix seconds or milliseconds, an HTTP
    date, or an ISO 8601 time with an offset; else VerificationError."""
    if _UNIX.fullmatch(timestamp):
        seconds = int(timestamp)
        return seconds // 1000 if seconds > MS_THRESHOLD else seconds
    when: datetime | None
    try:
        when = email.utils.parsedate_to_datetime(timestamp)
    except (TypeError, ValueError, IndexError):
        try:
            when = datetime.fromisoformat(timestamp)
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise VerificationError(
            f"{TIMESTAMP_HEADER} header is not a Unix time or an HTTP date (with its zone)"
        )
    return int(when.timestamp())


def _event(index: int, item: Any, meta: Mapping[str, Any]) -> InboundEvent:
    where = f"data[{index}]"
    if not isinstance(item, dict):
        raise EventShapeError(f"{where} is not an object")
    external_id = check_id(item.get("external_id"), f"{where}.external_id")
    topic = check_type(item.get("topic"), f"{where}.topic")
    payload = item.get("payload")
    if not isinstance(payload, dict):
        raise EventShapeError(f"{where}.payload is not an object")
    envelope = {"type": topic, "id": external_id, "data": payload, "meta": dict(meta)}
    return InboundEvent(external_id, topic, envelope, encode_event(envelope))


SOURCE = SourceType(name="klaviyo", settings=KlaviyoSettings, build=KlaviyoSource, batches=True)
