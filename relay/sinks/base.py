"""The sink contract and the registry of sink types.

A sink type is one file that exports ``SINK = SinkType(...)``: its settings model (validated when
``rules.yaml`` loads), the per-send fields it takes (string values are Jinja templates rendered per
event, e.g. ``to``), the keys its message template may hold, and a ``build`` function that makes a
ready ``Sink`` from validated settings and the shared ``SinkContext``.

Built-in sinks register through the ``relay.sinks`` entry-point group exactly like third-party ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from relay.errors import PermanentError
from relay.plugins import load_plugins
from relay.recipients.addresses import SuppressionList
from relay.recipients.links import Recipients
from relay.secret import SecretStr as SecretStr  # re-exported: a sink's settings use it


class CircuitSettings(BaseModel):
    """Per-sink circuit breaker (``relay.delivery.breaker``): how many retryable failures in a
    row open it, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    cooldown_s: float = Field(default=30.0, gt=0, le=3600)
    max_cooldown_s: float = Field(default=600.0, gt=0, le=24 * 3600)


class RetrySettings(BaseModel):
    """Per-sink retry policy: exponential backoff with jitter, capped, for a bounded count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=18, ge=1, le=100)
    first_backoff_s: float = Field(default=5.0, gt=0, le=3600)
    max_backoff_s: float = Field(default=4 * 3600.0, gt=0, le=7 * 24 * 3600)


class SinkSettings(BaseModel):
    """Settings every sink has. A sink type's own settings model subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    type: str
    retry: RetrySettings = RetrySettings()
    circuit: CircuitSettings = CircuitSettings()
    concurrency: int = Field(default=4, ge=1, le=256)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=10_000)
    timeout_s: float = Field(default=10.0, gt=0, le=300)


class SendFields(BaseModel):
    """Per-send fields a sink takes besides ``sink`` and ``template`` (none by default).

    Their values are templates rendered per event (strings, and the strings inside lists and
    mappings), except the fields named in ``literal_fields``, which are used as written (a SQL
    statement, say, must never be built from event data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    literal_fields: ClassVar[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class TemplateField:
    """One key of a message template file: ``kind`` is ``text``, ``html``, ``slack``, ``data``
    or ``slack-data``.

    ``text``, ``html`` and ``slack`` are Jinja strings (``html`` autoescaped for HTML, ``slack``
    escaping ``& < >`` in interpolated values as Slack requires); ``data`` and ``slack-data`` are
    YAML structures whose string leaves are Jinja strings (a leaf that is exactly ``{{ expr }}``
    keeps its type).
    """

    kind: str = "text"
    required: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message for one delivery: what a sink sends.

    ``payload`` holds the rendered send fields and template keys (e.g. ``to``, ``subject``,
    ``html``, ``text`` for email). ``event`` is the parsed event envelope.
    """

    delivery_id: str
    idempotency_key: str
    event_id: str
    event_type: str
    rule: str
    sink: str
    payload: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SinkContext:
    """Shared, ready objects a sink is built with. Sinks never build their own HTTP client.
    ``suppressions`` is the store's suppression list (the ``suppression`` sink writes to it),
    ``clock`` the time the relay runs on."""

    http: httpx.AsyncClient
    suppressions: SuppressionList | None = None
    clock: Callable[[], float] = time.time


MESSAGE_ERRORS: tuple[type[Exception], ...] = (UnicodeEncodeError, RecursionError)
"""What a message's own content raises when a sink encodes it: text that is not valid Unicode
(a lone surrogate such as ``"\\ud800"`` is a valid JSON escape, so a signed event may carry one),
or an event nested deeper than Python's encoders go. No retry changes the message: the delivery
is dead with the reason, and its sink's circuit does not hear of it (``message_error``)."""


def message_error(what: str, exc: BaseException) -> PermanentError:
    """``exc`` (one of ``MESSAGE_ERRORS``) as the delivery's own PermanentError, saying what in
    the message is wrong: ``what`` is what was attempted (``post to Slack``)."""
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start : exc.end]
        detail = (
            f"the message holds text that is not valid Unicode ({exc.reason}: {bad!a} at"
            f" character {exc.start})"
        )
    else:
        detail = "the message is nested too deeply to encode"
    return PermanentError(f"{what}: {detail}")


def encode_utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8, or the message's own PermanentError (``message_error``)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise message_error(what, exc) from exc


class Sink(Protocol):
    """Delivers a message or raises ``RetryableError`` / ``PermanentError``.

    A sink that holds resources of its own (a database pool) may also define
    ``async def aclose(self) -> None``; relay calls it at shutdown and after a reload replaced it.
    """

    async def send(self, message: Message) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkType:
    """Everything relay needs to know about one kind of sink."""

    name: str
    settings: type[SinkSettings]
    build: Callable[[Any, SinkContext], Sink]
    send_fields: type[SendFields] = SendFields
    template_fields: Mapping[str, TemplateField] = field(default_factory=dict)
    template_required: bool = True
    describe: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None
    """Turns a rendered payload into labelled lines for ``relay preview``."""
    check: Callable[[Mapping[str, Any]], None] | None = None
    """Raises ``PayloadError`` for a rendered payload the provider would refuse (what ``send``
    checks first); ``relay check`` runs it on every sample's rendering."""
    recipients: Recipients | None = None
    """An email sink's: the addresses a rendered payload sends to, by field, the main one first
    (``{"to": [...], "cc": [...], "bcc": [...]}``). The worker holds back the suppressed ones
    before each send (all of them, when every address of the first field is suppressed);
    ``unsubscribe:`` takes only such sinks, which then get a ``headers`` mapping in the payload
    (``List-Unsubscribe``, ``List-Unsubscribe-Post``) to send with the email."""


def load_sink_types(broken: dict[str, str] | None = None) -> dict[str, SinkType]:
    """Every sink type registered in the ``relay.sinks`` entry-point group, by name (a broken
    plugin is left out and described in ``broken``)."""
    return load_plugins("relay.sinks", SinkType, broken)
