"""Sample events: loading them, rendering every rule against them (check), and previews.

These are the same functions ``serve`` uses to validate a reload: a template that would fail at
send time fails here first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config.checks import shown
from relay.config.model import Config
from relay.config.workflow import check_samples, describe_timing, describe_workflow
from relay.errors import Diagnostic, PayloadError, TemplateError
from relay.rules import Rule
from relay.templates import Where


@dataclass(frozen=True)
class Sample:
    file: str
    event: Mapping[str, Any]


def parse_event(text: str, file: str) -> tuple[Mapping[str, Any] | None, Diagnostic | None]:
    """A JSON event envelope, or a located reason why ``text`` is not one."""
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, Diagnostic(file, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}")
    if not isinstance(event, dict):
        return None, Diagnostic(file, 1, 1, "an event must be a JSON object")
    if not isinstance(event.get("type"), str):
        return None, Diagnostic(file, 1, 1, "an event needs a string 'type' (e.g. user.created)")
    return event, None


def load_samples(folder: Path) -> tuple[list[Sample], list[Diagnostic]]:
    samples: list[Sample] = []
    problems: list[Diagnostic] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Diagnostic(str(path), 1, 1, f"cannot read sample: {exc}"))
            continue
        event, problem = parse_event(text, str(path))
        if problem:
            problems.append(problem)
        elif event is not None:
            samples.append(Sample(str(path), event))
    return samples, problems


def render_all(config: Config, samples: Sequence[Sample], samples_dir: str) -> list[Diagnostic]:
    """Render every send of every rule against each sample it matches; report what fails.
    A digest's sends are rendered once, over a batch of every sample the rule matches; its
    workflow keys are checked against the samples too (``check_samples``).

    A rule that matches no sample gets a warning: nothing vouches for its templates.
    """
    found: list[Diagnostic] = []
    seen: set[tuple[str | None, int | None, str]] = set()
    for rule in config.rules:
        matched = [s for s in samples if rule.matches(s.event)]
        if not matched:
            typed = [s for s in samples if rule.matches_type(str(s.event.get("type")))]
            why = "its condition is false for every sample" if typed else "no sample matches it"
            found.append(
                Diagnostic(
                    "rules.yaml",
                    rule.line,
                    1,
                    f"rule '{rule.name}' was not "
                    f"rendered: {why}; add a sample event to {samples_dir}/",
                    "warning",
                )
            )
        renders: list[tuple[Sample, list[Mapping[str, Any]] | None]] = [
            (sample, None) for sample in matched
        ]
        if rule.workflow.digest is not None and matched:
            renders = [(matched[0], [sample.event for sample in matched])]
        for sample, batch in renders:
            what = f"sample {Path(sample.file).name}"
            if batch is not None:
                what = f"a digest of {len(batch)} sample events"
            for send in rule.sends:
                check = config.sinks[send.sink].type.check
                try:
                    payload = send.render(sample.event, batch)
                    if check is not None:
                        check(payload)
                except TemplateError as exc:
                    file, line, message = exc.file, exc.line, exc.message
                except PayloadError as exc:
                    file, line = _where(send.parts, exc.path)
                    message = str(exc)
                else:
                    continue
                if (file, line, message) not in seen:
                    seen.add((file, line, message))
                    where = f"rule '{rule.name}', {what}"
                    found.append(
                        Diagnostic(
                            file or "rules.yaml", line or rule.line, 1, f"{message} ({where})"
                        )
                    )
        found += check_samples(rule, samples)
    return found


def _where(parts: Mapping[str, Any], path: Sequence[str | int]) -> tuple[str | None, int | None]:
    """The template file and line of the compiled part at ``path`` (or of the nearest leaf
    below the deepest part of it that exists)."""
    node: Any = parts
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
    while isinstance(node, dict | list) and node:
        node = next(iter(node.values())) if isinstance(node, dict) else node[0]
    where = getattr(node, "where", None)
    return (where.file, where.line) if isinstance(where, Where) else (None, None)


@dataclass(frozen=True)
class PreviewSend:
    sink: str
    sink_type: str
    payload: Mapping[str, Any] | None
    lines: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    index: int = 0  # which send of its rule (0-based), as a delivery's send_index
    due_at: float | None = None  # when it would go out, if not at once (a delay, a window)
    timing: str = "at once"  # why then, in words


@dataclass(frozen=True)
class PreviewRule:
    rule: str
    matched: bool
    reason: str
    sends: list[PreviewSend] = field(default_factory=list)
    workflow: list[str] = field(default_factory=list)  # what else applies: a cancel, a digest...
    digest_of: int = 0  # a digest's sends are rendered over this many events


def preview(
    config: Config,
    event: Mapping[str, Any],
    only: str | None = None,
    *,
    now: float = 0.0,
    samples: Sequence[Sample] = (),
) -> list[PreviewRule]:
    """What each rule would do with ``event`` received at ``now``: matched or why not, each
    rendered send and when it would go out, and what would cancel it or hold it back. A
    digest's sends are rendered over a batch of ``event`` and the other samples the rule
    matches (at most its ``max``)."""
    result = []
    for rule in config.rules:
        if only is not None and rule.name != only:
            continue
        matched, reason = _why(rule, event)
        batch = None
        digest = rule.workflow.digest
        if digest is not None:
            others = [s.event for s in samples if s.event != event and rule.matches(s.event)]
            batch = [event, *others][: digest.max]
        sends = [_preview_send(config, rule, i, event, now, batch) for i in range(len(rule.sends))]
        notes = describe_workflow(rule, event)
        digest_of = 0 if batch is None else len(batch)
        result.append(
            PreviewRule(rule.name, matched, reason, sends if matched else [], notes, digest_of)
        )
    return result


def _why(rule: Rule, event: Mapping[str, Any]) -> tuple[bool, str]:
    event_type = str(event.get("type"))
    if not rule.matches_type(event_type):
        return False, f"{event_type} does not match {', '.join(rule.patterns)}"
    if rule.condition is not None and not rule.condition.evaluate(event):
        error = rule.condition.explain(event)
        detail = f" ({error})" if error else f": it is {shown(rule.condition.value(event), 80)}"
        return False, f"condition `{rule.condition.source}` is false{detail}"
    return True, "matched"


def _preview_send(
    config: Config,
    rule: Rule,
    index: int,
    event: Mapping[str, Any],
    now: float,
    batch: list[Mapping[str, Any]] | None,
) -> PreviewSend:
    send = rule.sends[index]
    spec = config.sinks[send.sink]
    due_at, timing = describe_timing(rule, send, event, now)
    try:
        payload = send.render(event, batch)
    except (TemplateError, PayloadError) as exc:
        return PreviewSend(
            send.sink,
            spec.type.name,
            None,
            error=str(exc),
            index=index,
            due_at=due_at,
            timing=timing,
        )
    if spec.type.describe is not None:
        lines = spec.type.describe(payload)
    else:
        lines = [
            (k, v if isinstance(v, str) else json.dumps(v, indent=2)) for k, v in payload.items()
        ]
    if not spec.type.template_required and not payload:
        lines = [("body", json.dumps(event, indent=2))]
    return PreviewSend(
        send.sink, spec.type.name, payload, lines, index=index, due_at=due_at, timing=timing
    )
