"""``verify: hmac``: a configurable HMAC-SHA256 sender (GitHub-, Shopify-, Stripe-like schemes).

``signed`` spells out what is signed: ``{body}`` (the raw body), ``{timestamp}`` and ``{id}`` (the
``timestamp_header`` / ``id_header`` values as received) and literal text, e.g. the default
``"{body}"`` or ``"{timestamp}.{body}"``. The key is the secret's UTF-8 bytes; the signature header
holds one hex or base64 digest after an optional literal ``signature_prefix`` (``sha256=``).

The body must be JSON. The event id (the deduplication key) comes from ``id_header`` or
``id_field`` (a dotted path such as ``data.id``), the type from ``type_header`` or ``type_field``
(default ``type``). The event is the envelope ``{"type", "id", "data": <the body as sent>}``.
Headers that ``signed`` leaves out are not covered by the signature: without a signed timestamp a
captured request can be replayed, and with another unsigned id or type header it is a new event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from relay.errors import VerificationError
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
    lookup,
    parse_json,
    pick_headers,
    require_header,
)

__all__ = ["SOURCE", "HmacSettings", "HmacSource", "signed_parts"]

MAX_SIGNATURE_CHARS = 1024
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HEADER_NAME = r"^[A-Za-z0-9-]+$"
_FIELD_PATH = r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$"
_TIMESTAMP = re.compile(r"[\x20-\x7e]{1,64}")  # printable ASCII: an HTTP date has spaces
_UNIX_SECONDS = re.compile(r"0|[1-9][0-9]{0,11}")


HeaderName = Annotated[str, Field(pattern=_HEADER_NAME)]


def signed_parts(template: str) -> list[str]:
    """``signed`` split into literal text and the names ``body``/``timestamp``/``id`` (as
    ``{body}`` ...), checked: ``{body}`` exactly once, no other placeholder, no stray braces."""
    parts: list[str] = []
    at = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in ("body", "timestamp", "id"):
            raise ValueError(f"unknown placeholder {{{name}}} (use body, timestamp or id)")
        parts += [template[at : match.start()], match.group(0)]
        at = match.end()
    parts.append(template[at:])
    literal = "".join(parts[0::2])
    if "{" in literal or "}" in literal:
        raise ValueError("unbalanced '{' or '}'")
    if parts.count("{body}") != 1:
        raise ValueError("must contain {body} exactly once")
    return [p for p in parts if p]


class HmacSettings(SourceSettings):
    """``verify: hmac``: see the module docstring for what each key means."""

    secret: RawSecret
    previous_secret: RawSecret | None = None
    signature_header: HeaderName
    encoding: Literal["hex", "base64"] = "hex"
    signature_prefix: str = ""
    signed: str = "{body}"
    timestamp_header: HeaderName | None = None
    tolerance_s: int | None = Field(default=300, ge=1, le=7 * 24 * 3600)
    id_header: HeaderName | None = None
    id_field: str | None = Field(default=None, pattern=_FIELD_PATH)
    type_header: HeaderName | None = None
    type_field: str | None = Field(default=None, pattern=_FIELD_PATH)

    _blank_previous = field_validator("previous_secret", mode="before")(blank_to_none)

    @field_validator("signed")
    @classmethod
    def _check_signed(cls, value: str) -> str:
        signed_parts(value)
        return value

    @model_validator(mode="after")
    def _check_sources(self) -> Self:
        parts = signed_parts(self.signed)
        if ("{timestamp}" in parts) != (self.timestamp_header is not None):
            raise ValueError(
                "signed must use {timestamp} exactly when timestamp_header is set "
                "(an unsigned timestamp proves nothing)"
            )
        if "{id}" in parts and self.id_header is None:
            raise ValueError("signed uses {id}: set id_header")
        if (self.id_header is None) == (self.id_field is None):
            raise ValueError("set where the event id comes from: id_header or id_field (one)")
        if self.type_header is not None and self.type_field is not None:
            raise ValueError("set type_header or type_field, not both")
        if "tolerance_s" in self.model_fields_set and self.timestamp_header is None:
            raise ValueError("tolerance_s needs a timestamp_header")
        return self


class HmacSource:
    """Checks the configured HMAC, then builds the one event's envelope."""

    def __init__(self, settings: HmacSettings, context: SourceContext) -> None:
        self._s = s = settings
        self._parts = signed_parts(s.signed)
        self._keys = tuple(k.reveal().encode() for k in (s.secret, s.previous_secret) if k)
        self._fresh = Freshness(s.tolerance_s or 0, context.clock)
        names = (s.signature_header, s.timestamp_header, s.id_header, s.type_header)
        self._headers = {h.lower() for h in names if h is not None}

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        s = self._s
        found = pick_headers(headers, self._headers)
        given = self._given(require_header(found, s.signature_header.lower()))
        values = {"{body}": body}
        if s.timestamp_header is not None:
            values["{timestamp}"] = self._timestamp(found, s.timestamp_header.lower())
        header_id = None
        if s.id_header is not None:
            header_id = check_id(require_header(found, s.id_header.lower()), s.id_header)
            values["{id}"] = header_id.encode()
        signed = b"".join(values.get(part, part.encode()) for part in self._parts)
        digests = [hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys]
        if not any([hmac.compare_digest(given, digest) for digest in digests]):
            raise VerificationError("no matching signature")

        doc = parse_json(body)
        message_id = header_id or check_id(lookup(doc, s.id_field or ""), f"body.{s.id_field}")
        if s.type_header is not None:
            event_type = check_type(found.get(s.type_header.lower()), f"{s.type_header} header")
        else:
            path = s.type_field or "type"
            event_type = check_type(lookup(doc, path), f"body.{path}")
        envelope = {"type": event_type, "id": message_id, "data": doc}
        return [InboundEvent(message_id, event_type, envelope, encode_event(envelope))]

    def _given(self, header: str) -> bytes:
        name = self._s.signature_header.lower()
        if len(header) > MAX_SIGNATURE_CHARS:
            raise VerificationError(f"{name} header too long")
        prefix = self._s.signature_prefix
        if not header.startswith(prefix):
            raise VerificationError(f"{name} header does not start with '{prefix}'")
        encoded = header[len(prefix) :]
        try:
            if self._s.encoding == "hex":
                if not re.fullmatch(r"[0-9A-Fa-f]{64}", encoded):
                    raise ValueError
                return bytes.fromhex(encoded)
            decoded = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, non-ASCII
            raise VerificationError(f"{name} header is not a {self._s.encoding} digest") from None
        if len(decoded) != hashlib.sha256().digest_size:
            raise VerificationError(f"{name} header is not a base64 SHA-256 digest")
        return decoded

    def _timestamp(self, found: Mapping[str, str], name: str) -> bytes:
        value = require_header(found, name)
        if not _TIMESTAMP.fullmatch(value):
            raise VerificationError(f"{name} header has invalid characters")
        if self._s.tolerance_s is not None:
            if not _UNIX_SECONDS.fullmatch(value):
                raise VerificationError(f"{name} header is not an integer")
            self._fresh.check(int(value))
        return value.encode()


SOURCE = SourceType(name="hmac", settings=HmacSettings, build=HmacSource)
