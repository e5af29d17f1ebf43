"""What a rule's workflow keys compile to: the runtime types ``relay serve`` plans with.

``relay.config.workflow`` builds them from ``rules.yaml`` (validated, templates compiled); a
``Rule`` carries its ``Workflow`` and each ``Send`` its ``Timing``.

- ``Timing``: a send's ``delay`` and ``window``: due at the event's receive time plus the delay,
  moved to the send window's next opening (``SendWindow``, in a fixed zone or the event's).
- ``CancelOn``: the event types that cancel the rule's unsent deliveries with the same ``key``.
- ``Digest``: events of the rule collected per ``key`` into one batch, sent ``window_s`` after
  its first (or once it holds ``max``); ``lead``: the first is also sent at once on its own.
- ``Limit``: ``once`` (``max`` 1, for ever) or ``throttle`` (``max`` per ``per_s``) per ``key``.

A ``Key`` renders a template over the event into a key (``render``); keys are event data: a
NUL or a lone surrogate is escaped and a long one hashed, so any key can be stored and compared.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from relay.errors import TemplateError
from relay.templates import TextTemplate, event_context
from relay.workflow.windows import Window, zone_named

MAX_KEY_CHARS = 200  # longer keys are stored as their hash


def clean_key(text: str) -> str:
    """``text`` as a storable key: escaped where no database takes it (a NUL, a lone
    surrogate), hashed when longer than MAX_KEY_CHARS."""
    safe = text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    if len(safe) <= MAX_KEY_CHARS:
        return safe
    return "sha256:" + hashlib.sha256(safe.encode()).hexdigest()


@dataclass(frozen=True)
class Key:
    """A key template (``"{{ data.id }}"``) over an event."""

    template: TextTemplate

    @property
    def source(self) -> str:
        return self.template.source

    def render(self, event: Mapping[str, Any]) -> str | None:
        """The event's key, cleaned; None when it renders empty. Raises TemplateError."""
        text = self.template.render(event_context(event)).strip()
        return clean_key(text) if text else None


@dataclass(frozen=True)
class Zone:
    """A window's time zone: a fixed one, or one named by the event (a template), with
    ``default`` when the event's is missing, empty or not a time zone."""

    default: ZoneInfo
    template: TextTemplate | None = None

    def for_event(self, event: Mapping[str, Any]) -> ZoneInfo:
        if self.template is None:
            return self.default
        try:
            name = self.template.render(event_context(event)).strip()
        except TemplateError:
            return self.default
        return zone_named(name) or self.default

    def describe(self) -> str:
        if self.template is None:
            return str(self.default.key)
        return f"the event's {self.template.source.strip()} (else {self.default.key})"


@dataclass(frozen=True)
class SendWindow:
    window: Window
    zone: Zone

    def describe(self) -> str:
        return f"{self.window.describe()} {self.zone.describe()}"


@dataclass(frozen=True)
class Timing:
    """When a send goes out: ``delay_s`` after its event, inside ``window`` (if any)."""

    delay_s: float = 0.0
    window: SendWindow | None = None

    def due(self, received_at: float, event: Mapping[str, Any]) -> float:
        """When a send of an event received at ``received_at`` is due."""
        return self.open_at(received_at + self.delay_s, event)

    def open_at(self, t: float, event: Mapping[str, Any]) -> float:
        """``t``, or the send window's next opening after it (in the event's zone)."""
        if self.window is None:
            return t
        return self.window.window.next_opening(t, self.window.zone.for_event(event))

    def zone(self, event: Mapping[str, Any]) -> ZoneInfo | None:
        return None if self.window is None else self.window.zone.for_event(event)


def types_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Event type patterns (``user.*``) as one regex, to compile once: a rule's ``events`` or
    its ``cancel_on``, which every event is matched against. Matches nothing when empty."""
    alternatives = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return re.compile(alternatives or "(?!)")


@dataclass(frozen=True)
class CancelOn:
    patterns: tuple[str, ...]
    key: Key

    def matches_type(self, event_type: str) -> bool:
        return self._types.match(event_type) is not None

    @functools.cached_property
    def _types(self) -> re.Pattern[str]:
        return types_regex(self.patterns)


@dataclass(frozen=True)
class Digest:
    window_s: float
    max: int
    key: Key | None  # None: one digest for the whole rule
    lead: bool  # first: now
    timing: Timing = Timing()  # the rule's send window: a batch closes inside it


@dataclass(frozen=True)
class Limit:
    kind: Literal["once", "throttle"]
    key: Key
    max: int
    per_s: float | None  # None: for ever
    label: str = ""  # as rules.yaml says it, for reasons: "throttle (1 per 24h)"


@dataclass(frozen=True)
class Workflow:
    """A rule's workflow keys; every part optional."""

    cancel: CancelOn | None = None
    digest: Digest | None = None
    limit: Limit | None = None


NO_WORKFLOW = Workflow()
