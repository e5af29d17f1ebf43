"""The source contract and the registry of source types.

A source type is one file that exports ``SOURCE = SourceType(...)``: its settings model (validated
when ``rules.yaml`` loads; the ``verify:`` key of a source names its type) and a ``build`` function
that makes a ready ``Source`` from validated settings and the shared ``SourceContext``.

A source owns everything about one kind of sender: it verifies the raw request, splits it into
events (one, or several for a batching sender), and says each event's id (the deduplication key)
and type (what rules match). Every bad input, unsigned or malformed, is a ``VerificationError``
(``EventShapeError`` when the signature is good but the body is not what was expected): ingest
answers it with a 400. Verification is never optional.

Built-in sources register through the ``relay.sources`` entry-point group exactly like third-party
ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from relay import deepjson
from relay.errors import EventShapeError, VerificationError
from relay.plugins import load_plugins
from relay.secret import Secret, SecretStr, checked

MAX_ID_CHARS = 256
_ID_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or control characters


class SourceSettings(BaseModel):
    """Settings every source has. A source type's own settings model subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    verify: str = "svix"
    """The source type's name (``svix``, ``standard-webhooks``, ``hmac``, ``klaviyo``, ...)."""
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One verified event out of a request.

    ``event`` is the routable envelope (``type`` at the top, ``data`` for templates); ``body`` is
    what is stored for it and decodes to ``event`` (the raw body when the request is the event).
    """

    message_id: str  # the sender's id for this event: the deduplication key within a source
    type: str
    event: Mapping[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class SourceContext:
    """Shared, ready objects a source is built with."""

    clock: Callable[[], float] = time.time


class Source(Protocol):
    """Verifies one request and splits it into events, or raises ``VerificationError``."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]: ...


@dataclass(frozen=True, slots=True)
class SourceType:
    """Everything relay needs to know about one kind of source."""

    name: str
    settings: type[SourceSettings]
    build: Callable[[Any, SourceContext], Source]
    batches: bool = False
    """One request may carry several events: ingest answers with counts, not one event id."""
    event_types: Collection[str] | None = field(default=None, repr=False)
    """The event types this sender is known to send, for ``relay check``'s typo warning on rule
    patterns; ``None`` when they are open-ended (then no pattern is warned about)."""
    sender: str = ""
    """Who sends ``event_types``, for that warning ("matches no known Clerk event type")."""


def load_source_types(broken: dict[str, str] | None = None) -> dict[str, SourceType]:
    """Every source type registered in the ``relay.sources`` entry-point group, by name (a broken
    plugin is left out and described in ``broken``)."""
    return load_plugins("relay.sources", SourceType, broken)


# --- helpers for source implementations ---------------------------------------------------------


def pick_headers(headers: Mapping[str, str], names: Collection[str]) -> dict[str, str]:
    """The wanted headers (``names`` lower-case), by lower-case name; a repeated one keeps its LAST
    value. A value that is not a string (a hostile or broken caller) is a VerificationError."""
    found: dict[str, str] = {}
    for key, value in headers.items():
        if isinstance(key, str) and (name := key.lower()) in names:
            if not isinstance(value, str):
                raise VerificationError(f"malformed {name} header")
            found[name] = value
    return found


def require_header(found: Mapping[str, str], name: str) -> str:
    """``found[name]``, or a VerificationError saying it is missing or empty."""
    value = found.get(name)
    if value is None:
        raise VerificationError(f"missing {name} header")
    if not value:
        raise VerificationError(f"empty {name} header")
    return value


def check_id(value: object, what: str) -> str:
    """A usable event id (printable ASCII, 1..256 chars), else an EventShapeError about ``what``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise EventShapeError(f"{what} is missing or not a string", reason="no_id")
    if len(value) > MAX_ID_CHARS:
        raise EventShapeError(f"{what} is too long", reason="no_id")
    if not _ID_RE.fullmatch(value):
        raise EventShapeError(f"{what} has invalid characters", reason="no_id")
    return value


def check_type(value: object, what: str) -> str:
    """A usable event type (a non-empty string of at most 256 printable characters)."""
    if not isinstance(value, str) or not value:
        raise EventShapeError(f"{what} is missing or not a string", reason="no_type")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise EventShapeError(f"{what} is too long or has invalid characters", reason="no_type")
    return value


def parse_raw_secret(value: str, *, min_chars: int = 16) -> Secret:
    """Validate a shared secret used as the HMAC key as is (its UTF-8 bytes) and wrap it.

    Surrounding whitespace and quotes are rejected, not stripped: they mean the value was pasted
    wrongly. Raises ``ValueError`` with a message that never contains the secret.
    """
    if not value:
        raise ValueError("secret is empty")
    if value != value.strip():
        raise ValueError("secret has leading or trailing whitespace; remove it")
    if value[0] in "'\"" or value[-1] in "'\"":
        raise ValueError("secret is wrapped in quotes; remove the quotes")
    if len(value) < min_chars:
        raise ValueError(
            f"secret is too short ({len(value)} characters; expected at least {min_chars})"
        )
    return Secret(value)


RawSecret = Annotated[SecretStr, checked(parse_raw_secret)]
"""A settings field holding a shared HMAC secret used as is (``parse_raw_secret``)."""


def blank_to_none(value: object) -> object:
    """For an optional secret: ``""`` (e.g. an unset ``${VAR:-}``) means not set."""
    return None if value == "" else value


def lookup(doc: Any, path: str, default: object = None) -> object:
    """The value at a dotted path in parsed JSON (``data.id``; a number indexes a list), or
    ``default`` when there is none."""
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return default
    return doc


def parse_json(body: bytes) -> Any:
    """The body as JSON, however deeply nested (``relay.deepjson``), or an EventShapeError."""
    try:
        return deepjson.loads(body)
    except ValueError:  # UnicodeDecodeError is a ValueError
        raise EventShapeError("body is not valid JSON", reason="bad_json") from None


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with a non-empty string ``type`` (Clerk's, Resend's and Standard
    Webhooks' envelope), or an EventShapeError saying what is wrong."""
    event = parse_json(body)
    if not isinstance(event, dict):
        raise EventShapeError("body is not a JSON object", reason="bad_json")
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise EventShapeError("event has no 'type'", reason="no_type")
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The stored form of an envelope that relay built (compact JSON), however deep."""
    return deepjson.dumps(event).encode()


@dataclass(frozen=True, slots=True)
class Freshness:
    """A ±``tolerance_s`` window around ``clock()`` for a signed Unix-seconds timestamp."""

    tolerance_s: int
    clock: Callable[[], float] = field(default=time.time)

    def check(self, timestamp: int) -> None:
        now = self.clock()
        if timestamp < now - self.tolerance_s:
            raise VerificationError("timestamp too old")
        if timestamp > now + self.tolerance_s:
            raise VerificationError("timestamp in the future")
