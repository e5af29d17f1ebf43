"""A rule's workflow keys → the runtime ``Workflow`` and each send's ``Timing``, every error
located; and their checks against the sample events (``check_samples``, run by ``relay check``
and every reload).

What ``rules.yaml`` may say (the shapes are ``relay.config.model``'s):

- ``delay`` and ``window`` on a rule, or on a send (which then replaces its rule's);
- ``cancel_on`` (event types or globs) with ``key``, the template that relates two events;
- ``digest`` (``window``, ``max``, ``key``, ``first``), with a rule-level ``window`` at most: a
  digest goes out when its window ends, so ``delay`` does not apply, and it is one message, so it
  is not cancelled, once'd or throttled;
- ``once`` (a key template) or ``throttle`` (``key``, ``max``, ``per``), not both.

Keys and a ``timezone`` naming the event's zone (``"{{ data.public_metadata.timezone }}"``) are
templates in the sandbox, compiled here once; a fixed ``timezone`` must be a zone ``zoneinfo``
knows.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from relay.config import yamlfile
from relay.config.durations import format_duration
from relay.config.model import RuleModel, WindowModel
from relay.errors import Diagnostic, TemplateError, did_you_mean
from relay.rules import Rule, Send, valid_pattern
from relay.templates import Environments, TextTemplate, Where, event_context
from relay.workflow.spec import (
    CancelOn,
    Digest,
    Key,
    Limit,
    SendWindow,
    Timing,
    Workflow,
    Zone,
)
from relay.workflow.windows import Window, parse_days, parse_hours, zone_named

Path_ = yamlfile.Path_


class Sample(Protocol):
    """A sample event and its file (``relay.config.samples.Sample``)."""

    @property
    def file(self) -> str: ...
    @property
    def event(self) -> Mapping[str, Any]: ...


class WorkflowCompiler:
    """Compiles the workflow keys of one rules file's rules (``compile``, per rule)."""

    def __init__(self, doc: yamlfile.Document, envs: Environments) -> None:
        self.doc = doc
        self.envs = envs

    def compile(
        self, model: RuleModel, base: Path_, sends: tuple[Send, ...], known_types: list[str] | None
    ) -> tuple[Workflow, tuple[Send, ...]]:
        """The rule's ``Workflow`` and its sends with their ``Timing``."""
        self._refuse_mixtures(model, base)
        rule_window = self._window(model.window, (*base, "window"))
        timed = []
        for send in sends:  # those that compiled: send.index is its place in the file
            raw = model.send[send.index]
            at = (*base, "send", send.index)
            delay = raw.delay if raw.delay is not None else model.delay
            window = (
                rule_window if raw.window is None else self._window(raw.window, (*at, "window"))
            )
            timing = None if not delay and window is None else Timing(delay or 0.0, window)
            timed.append(replace(send, timing=timing))
        cancel = digest = limit = None
        if model.cancel_on is not None:
            cancel = self._cancel(model, base, known_types)
        if model.digest is not None:
            d, at = model.digest, (*base, "digest")
            key = None if d.key is None else self._key(d.key, (*at, "key"))
            timing = Timing(0.0, rule_window)
            digest = Digest(d.window, d.max, key, d.first == "now", timing)
        if model.once is not None:
            once = self._key(model.once, (*base, "once"))
            if once is not None:
                limit = Limit("once", once, 1, None, "once")
        elif model.throttle is not None:
            t, at = model.throttle, (*base, "throttle")
            key = self._key(t.key, (*at, "key"))
            if key is not None:
                label = f"throttle ({t.max} per {format_duration(t.per)})"
                limit = Limit("throttle", key, t.max, t.per, label)
        return Workflow(cancel, digest, limit), tuple(timed)

    def _refuse_mixtures(self, model: RuleModel, base: Path_) -> None:
        error = self.doc.error
        if model.key is not None and model.cancel_on is None:
            error((*base, "key"), "key: relates events for cancel_on; this rule has no cancel_on")
        if model.once is not None and model.throttle is not None:
            error((*base, "throttle"), "use once or throttle, not both")
        if model.digest is None:
            return
        for name in ("cancel_on", "once", "throttle", "delay"):
            if getattr(model, name) is not None:
                error(
                    (*base, name),
                    f"{name} cannot be combined with digest (a digest is sent when its window"
                    " ends, as one message)",
                )
        for j, send in enumerate(model.send):
            for name in ("delay", "window"):
                if getattr(send, name) is not None:
                    error(
                        (*base, "send", j, name),
                        f"{name} cannot be set on a send of a digest (a rule-level window is)",
                    )

    def _cancel(
        self, model: RuleModel, base: Path_, known_types: list[str] | None
    ) -> CancelOn | None:
        raw = [model.cancel_on] if isinstance(model.cancel_on, str) else model.cancel_on or []
        at = (*base, "cancel_on")
        if not raw:
            self.doc.error(at, "cancel_on: list at least one event type or pattern")
        for k, pattern in enumerate(raw):
            path = at if isinstance(model.cancel_on, str) else (*at, k)
            problem = valid_pattern(pattern)
            if problem:
                self.doc.error(path, f"bad event pattern '{pattern}': {problem}")
            elif known_types and not any(Rule.pattern_matches(pattern, t) for t in known_types):
                self.doc.error(
                    path,
                    f"cancel_on pattern '{pattern}' matches no known event type"
                    f"{did_you_mean(pattern, known_types)}",
                    severity="warning",
                )
        if model.key is None:
            self.doc.error(
                base,
                "missing required key 'key' (with cancel_on: the template that relates a"
                ' cancelling event to the ones it cancels, e.g. "{{ data.id }}")',
                key=True,
            )
            return None
        key = self._key(model.key, (*base, "key"))
        return None if key is None else CancelOn(tuple(raw), key)

    def _window(self, model: WindowModel | None, at: Path_) -> SendWindow | None:
        if model is None:
            return None
        window = Window(parse_days(model.days), *parse_hours(model.hours))
        default = self._zone_name(model.default_timezone, (*at, "default_timezone"))
        if "{" in model.timezone:
            template = self._template(model.timezone, (*at, "timezone"), "timezone")
            return (
                None
                if template is None or default is None
                else SendWindow(window, Zone(default, template))
            )
        fixed = self._zone_name(model.timezone, (*at, "timezone"))
        return None if fixed is None else SendWindow(window, Zone(fixed))

    def _zone_name(self, name: str, at: Path_) -> zoneinfo.ZoneInfo | None:
        zone = zone_named(name)
        if zone is None:
            hint = did_you_mean(name, zoneinfo.available_timezones())
            leaf = str(at[-1])
            self.doc.error(
                at,
                f"{leaf}: unknown time zone '{name}'{hint} (an IANA name such as Europe/Berlin,"
                " or a template naming the event's)",
            )
        return zone

    def _key(self, source: str, at: Path_) -> Key | None:
        template = self._template(source, at, str(at[-1]))
        return None if template is None else Key(template)

    def _template(self, source: str, at: Path_, what: str) -> TextTemplate | None:
        mark = self.doc.locate(at)
        try:
            return TextTemplate(self.envs.text, source, Where(self.doc.file, mark.line, mark.block))
        except TemplateError as exc:
            self.doc.error(at, f"{what}: malformed template: {exc.message}")
            return None


def check_samples(rule: Rule, samples: Sequence[Sample]) -> list[Diagnostic]:
    """Render the rule's keys (and an event's time zone) against the samples it matches, and
    its cancel key against the samples its ``cancel_on`` names: a key that fails is an error
    (its deliveries could not be cancelled, or would be held back); one that renders empty, or
    a time zone that falls back to the default, a warning."""
    workflow = rule.workflow
    found: list[Diagnostic] = []

    def say(sample: Sample, where: Where, message: str, severity: str = "error") -> None:
        name = sample.file.rsplit("/", 1)[-1]
        text = f"rule '{rule.name}': {message} (sample {name})"
        found.append(Diagnostic(where.file, where.line, 1, text, severity))

    matched = [s for s in samples if rule.matches(s.event)]
    keys: list[tuple[str, Key | None, Sequence[Sample]]] = []
    if workflow.cancel is not None:
        cancelling = [s for s in samples if workflow.cancel.matches_type(str(s.event.get("type")))]
        keys += [("key", workflow.cancel.key, matched), ("key", workflow.cancel.key, cancelling)]
    if workflow.digest is not None:
        keys.append(("digest key", workflow.digest.key, matched))
    if workflow.limit is not None:
        keys.append((f"{workflow.limit.kind} key", workflow.limit.key, matched))
    for what, key, group in keys:
        for sample in group if key is not None else ():
            assert key is not None
            where = key.template.where
            try:
                if key.render(sample.event) is None:
                    say(sample, where, f"{what} renders empty", "warning")
            except TemplateError as exc:
                say(sample, where, f"{what} does not render: {exc.message}")
    for sample in matched:
        for send in rule.sends:
            window = send.timing.window if send.timing is not None else None
            if window is not None and window.zone.template is not None:
                zone = _event_zone(window.zone.template, sample.event)
                if zone is None:
                    say(
                        sample,
                        window.zone.template.where,
                        f"its time zone ({window.zone.template.source.strip()}) names none:"
                        f" the default {window.zone.default.key} applies",
                        "warning",
                    )
    return found


def _event_zone(template: TextTemplate, event: Mapping[str, Any]) -> zoneinfo.ZoneInfo | None:
    try:
        return zone_named(template.render(event_context(event)).strip())
    except TemplateError:
        return None


def describe_timing(
    rule: Rule, send: Send, event: Mapping[str, Any], now: float
) -> tuple[float | None, str]:
    """When ``send`` of ``event`` received at ``now`` would go out: (when, if not at once; why
    then, in words), for ``relay preview``."""
    digest = rule.workflow.digest
    if digest is not None:
        closes = digest.timing.open_at(now + digest.window_s, event)
        lead = (
            "; first: now: if no batch is open, this event goes out at once on its own"
            * digest.lead
        )
        return closes, (
            f"in a digest, when its batch closes: {format_duration(digest.window_s)} after its"
            f" first event (this one, if none is open), or once it holds {digest.max}{lead}"
            + _inside(digest.timing, event, closes)
        )
    timing = send.timing
    if timing is None:
        return None, "at once"
    due = timing.due(now, event)
    said = [f"{format_duration(timing.delay_s)} after it is received"] if timing.delay_s else []
    text = ", ".join(said) + _inside(timing, event, due)
    return (None, f"at once{text}") if due <= now else (due, text.removeprefix(", "))


def _inside(timing: Timing, event: Mapping[str, Any], due: float) -> str:
    window, zone = timing.window, timing.zone(event)
    if window is None or zone is None:
        return ""
    local = datetime.fromtimestamp(due, zone)
    return (
        f", inside the window {window.window.describe()} {zone.key}"
        f" ({local:%a %Y-%m-%d %H:%M} there)"
    )


def describe_workflow(rule: Rule, event: Mapping[str, Any]) -> list[str]:
    """What else applies to the rule's sends of ``event``, in words: what would cancel them,
    hold them back or batch them (for ``relay preview``)."""
    workflow, notes = rule.workflow, []
    if workflow.cancel is not None:
        key = _said(workflow.cancel.key, event)
        notes.append(
            f"cancelled if {', '.join(workflow.cancel.patterns)} arrives with the same key"
            f" ({key}) before a send goes out"
        )
    if workflow.limit is not None:
        limit, key = workflow.limit, _said(workflow.limit.key, event)
        if limit.kind == "once":
            notes.append(f"once per key ({key}): suppressed if the rule already sent for it")
        else:
            per = format_duration(limit.per_s or 0)
            notes.append(
                f"throttle: at most {limit.max} per {per} for key ({key}); more are suppressed"
            )
    if workflow.digest is not None and workflow.digest.key is not None:
        notes.append(f"digest key ({_said(workflow.digest.key, event)}): one batch per key")
    return notes


def _said(key: Key, event: Mapping[str, Any]) -> str:
    try:
        rendered = key.render(event)
    except TemplateError as exc:
        return f"does not render: {exc.message}"
    return "renders empty" if rendered is None else f"'{rendered}'"
