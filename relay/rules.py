"""The runtime matcher: which rules an event matches, and what each send renders to."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from relay.errors import TemplateError
from relay.recipients.links import Link, UnsubscribeSend
from relay.templates import digest_context, event_context, render_data
from relay.workflow.spec import NO_WORKFLOW, Timing, Workflow, types_regex

_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?-]+$")  # ':' for Klaviyo topics (event:klaviyo.x)


def valid_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid event-type pattern, or None if it is."""
    if not pattern:
        return "it is empty"
    if not _PATTERN.match(pattern):
        return "use event names with '*' and '?' wildcards only (e.g. organizationMembership.*)"
    return None


class Condition:
    """A rule's ``when:``: a sandboxed Jinja expression over the event, true or false."""

    def __init__(self, env: jinja2.Environment, source: str) -> None:
        self.source = source
        try:
            self._expr = env.compile_expression(source, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(str(exc.message)) from exc

    def evaluate(self, event: Mapping[str, Any]) -> bool:
        """True when the condition holds; a missing field or other error counts as not holding."""
        try:
            value = self._expr(**event_context(event))
            return bool(value) and not isinstance(value, jinja2.Undefined)
        except Exception:
            return False

    def value(self, event: Mapping[str, Any]) -> Any:
        """What the expression evaluates to for ``event`` (None when it fails: ``explain``)."""
        try:
            value = self._expr(**event_context(event))
        except Exception:
            return None
        return None if isinstance(value, jinja2.Undefined) else value

    def explain(self, event: Mapping[str, Any]) -> str | None:
        """The error evaluating the condition raises, if any (for ``preview`` and ``check``)."""
        try:
            value = self._expr(**event_context(event))
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


@dataclass(frozen=True)
class Send:
    """One send of a rule: a sink, a compiled message template and compiled send fields, when
    it goes out (its ``delay`` and ``window``, or its rule's), and for an email of a category its
    one-click unsubscribe (``unsubscribe``)."""

    index: int
    sink: str
    template: str | None
    parts: Mapping[str, Any]
    fields: Mapping[str, Any]
    timing: Timing | None = None
    unsubscribe: UnsubscribeSend | None = None

    def render(
        self, event: Mapping[str, Any], batch: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The message payload for this event (for a digest: for its ``batch`` of events, the
        first of them as ``event``); raises TemplateError (or PayloadError, for an unsubscribe
        link it cannot make).

        The send fields are rendered first: with ``unsubscribe``, the link is made for the
        recipient they name, the message template sees it as ``unsubscribe_url``, and the
        payload gets its ``headers`` (``List-Unsubscribe``, ``List-Unsubscribe-Post``)."""
        context = event_context(event) if batch is None else digest_context(event, batch)
        fields = {key: render_data(value, context) for key, value in self.fields.items()}
        link: Link | None = None
        if self.unsubscribe is not None:
            link = self.unsubscribe.link(fields)
            context = {**context, "unsubscribe_url": link.url}
        payload = {key: render_data(value, context) for key, value in self.parts.items()}
        payload.update(fields)
        if link is not None:
            payload["headers"] = dict(link.headers)
        return payload


@dataclass(frozen=True)
class Rule:
    name: str
    patterns: tuple[str, ...]
    condition: Condition | None
    sends: tuple[Send, ...]
    line: int = 0
    workflow: Workflow = NO_WORKFLOW

    @staticmethod
    def pattern_matches(pattern: str, event_type: str) -> bool:
        return fnmatch.fnmatchcase(event_type, pattern)

    @functools.cached_property
    def _types(self) -> re.Pattern[str]:
        return types_regex(self.patterns)

    def matches_type(self, event_type: str) -> bool:
        """Whether ``event_type`` matches any of the rule's patterns (as ``pattern_matches``)."""
        return self._types.match(event_type) is not None

    def matches(self, event: Mapping[str, Any]) -> bool:
        event_type = event.get("type")
        if not isinstance(event_type, str) or not self.matches_type(event_type):
            return False
        return self.condition is None or self.condition.evaluate(event)


def match(rules: Iterable[Rule], event: Mapping[str, Any]) -> list[Rule]:
    """The rules ``event`` matches, in file order."""
    return [rule for rule in rules if rule.matches(event)]
