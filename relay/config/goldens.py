"""Golden tests of the rules: a file beside ``rules.yaml`` (``rules.test.yaml``) says, event by
event, what must happen. ``relay test`` and ``relay check`` run each case through ``preview``,
the matching and rendering that ``serve`` does::

    tests:
      - name: the welcome email goes to the primary address, not the first one
        event: samples/user.created.json        # a file (relative to this one), or inline JSON
        expect:
          rules: [welcome-email, signup-alert]  # exactly these rules match
          sinks: [email, slack-signups]         # exactly these sinks get a message
          sends:                                # checks on what one send renders
            - rule: welcome-email               # which send: rule, sink and/or index
              fields:
                to: ada@example.com             # a plain value: must be equal
                html: {contains: "<strong>ada@example.com</strong>"}
      - name: a deleted user gets nothing
        event: {"type": "user.deleted", "data": {"id": "user_1", "deleted": true}}
        expect:
          nothing_sent: true

``set:`` on a case changes fields of its event first (``data.first_name: "<b>Ada</b>"``; a
path's parts are keys, or list positions from 0). A field path in ``fields`` reaches into the
rendered message the same way (``body.role``). The checks are ``relay.config.checks``'s. A
malformed file is every located problem at once (``rules.test.yaml:LINE:COL: message``), read
by the same strict YAML reader as ``rules.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.config import yamlfile
from relay.config.checks import Check, compile_check, problems
from relay.config.model import Config
from relay.config.samples import PreviewRule, PreviewSend, parse_event, preview
from relay.errors import Diagnostic, did_you_mean

__all__ = ["Case", "CaseResult", "load_cases", "report", "run_case", "run_file", "tests_path"]


def tests_path(rules_path: Path) -> Path:
    """Where the golden tests of a rules file are: ``rules.yaml`` → ``rules.test.yaml``."""
    return rules_path.with_name(f"{rules_path.stem}.test.yaml")


_NO_TYPE = "an event needs a string 'type' (e.g. user.created)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SendModel(_Strict):
    rule: str | None = None
    sink: str | None = None
    index: int | None = Field(default=None, ge=0)
    fields: dict[str, Any] = Field(min_length=1)


class _ExpectModel(_Strict):
    rules: list[str] | None = None
    sinks: list[str] | None = None
    sends: list[_SendModel] = Field(default_factory=list)
    nothing_sent: bool = False


class _CaseModel(_Strict):
    name: str = Field(min_length=1)
    event: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict)
    expect: _ExpectModel


@dataclass(frozen=True)
class SendCheck:
    """Checks on the one send a case picks (by rule, sink and index, whichever are given)."""

    rule: str | None
    sink: str | None
    index: int | None
    fields: Mapping[str, Check]

    def label(self) -> str:
        parts = [self.rule or "any rule", "->", self.sink or "any sink"]
        return " ".join(parts) + ("" if self.index is None else f" (send {self.index})")

    def picks(self, rule: str, send: PreviewSend) -> bool:
        return (
            self.rule in (None, rule)
            and self.sink in (None, send.sink)
            and self.index in (None, send.index)
        )


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    line: int
    event: Mapping[str, Any]
    rules: frozenset[str] | None
    sinks: frozenset[str] | None
    nothing_sent: bool
    sends: tuple[SendCheck, ...]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    failures: list[list[str]] = field(default_factory=list)  # each: a summary, then details

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(path: Path, config: Config) -> tuple[list[Case], list[Diagnostic]]:
    """The cases of a test file, checked against ``config``; or every located problem."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Diagnostic(file, 1, 1, f"cannot read the test file: {exc}")]
    doc = yamlfile.load(text, file)
    if doc.diagnostics:
        return [], doc.diagnostics
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list) or not data["tests"]:
        doc.error((), "a test file is a mapping whose `tests:` lists the cases (docs/testing.md)")
        return [], doc.diagnostics
    for key in data.keys() - {"tests"}:
        doc.error((key,), f"unknown key '{key}'", key=True)
    cases = []
    names: dict[str, int] = {}
    for i, item in enumerate(data["tests"]):
        at = ("tests", i)
        try:
            raw = _CaseModel.model_validate(item)
        except ValidationError as exc:
            _report(doc, exc, at)
            continue
        if raw.name in names:
            first = names[raw.name]
            doc.error((*at, "name"), f"duplicate test name '{raw.name}' (first at line {first})")
        names.setdefault(raw.name, doc.locate(at).line)
        case = _Compiler(doc, at, config, path.parent).case(raw)
        if case is not None:
            cases.append(case)
    return (cases, []) if not doc.diagnostics else ([], doc.diagnostics)


def _report(doc: yamlfile.Document, exc: ValidationError, base: yamlfile.Path_) -> None:
    """pydantic's errors (of the value at ``base``) as located diagnostics."""
    for err in exc.errors():
        path = (*base, *err["loc"])
        leaf = str(path[-1]) if path else ""
        if err["type"] == "extra_forbidden":
            doc.error(path, f"unknown key '{leaf}'", key=True)
        elif err["type"] == "missing":
            doc.error(path[:-1], f"missing required key '{leaf}'", key=True)
        elif len(path) >= 2 and path[-2] == "event":  # str | dict: pydantic tried both
            doc.error(path[:-1], "event: a file name, or the event as inline JSON")
        else:
            where = f"{leaf}: " if leaf and not leaf.isdigit() else ""
            doc.error(path, f"{where}{err['msg'].removeprefix('Value error, ')}")


class _Compiler:
    """One case of the file checked against the config: its event read, its names known."""

    def __init__(
        self, doc: yamlfile.Document, at: yamlfile.Path_, config: Config, folder: Path
    ) -> None:
        self.doc, self.at, self.config, self.folder = doc, at, config, folder
        self.before = len(doc.diagnostics)

    def case(self, raw: _CaseModel) -> Case | None:
        event = self._event(raw.event)
        if event is not None:
            event = self._set(event, raw.set)
        expect, at = raw.expect, (*self.at, "expect")
        rule_names = [r.name for r in self.config.rules]
        for k, name in enumerate(expect.rules or []):
            self._known("rule", name, rule_names, (*at, "rules", k))
        for k, name in enumerate(expect.sinks or []):
            self._known("sink", name, self.config.sinks, (*at, "sinks", k))
        if expect.nothing_sent and (expect.sinks or expect.sends or expect.rules):
            self.doc.error(
                (*at, "nothing_sent"),
                "nothing_sent: true cannot go with rules, sinks or sends that expect a message",
            )
        sends = tuple(self._send(s, (*at, "sends", j)) for j, s in enumerate(expect.sends))
        if event is None or len(self.doc.diagnostics) > self.before:
            return None
        return Case(
            raw.name,
            self.doc.file,
            self.doc.locate(self.at).line,
            event,
            None if expect.rules is None else frozenset(expect.rules),
            None if expect.sinks is None else frozenset(expect.sinks),
            expect.nothing_sent,
            sends,
        )

    def _known(self, what: str, name: str | None, names: Any, at: yamlfile.Path_) -> None:
        if name is not None and name not in names:
            self.doc.error(at, f"unknown {what} '{name}'{did_you_mean(name, names)}")

    def _event(self, raw: str | dict[str, Any]) -> Mapping[str, Any] | None:
        at = (*self.at, "event")
        if isinstance(raw, str) and not raw.lstrip().startswith("{"):
            path = self.folder / raw
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.doc.error(at, f"cannot read event file {path}: {why}")
                return None
            event, problem = parse_event(text, str(path))
        elif isinstance(raw, str):
            event, problem = parse_event(raw, self.doc.file)
        elif isinstance(raw.get("type"), str):
            event, problem = raw, None
        else:
            event, problem = None, Diagnostic(self.doc.file, 1, 1, _NO_TYPE)
        if problem is not None:
            if problem.file == self.doc.file:  # inline: locate it at the event in this file
                self.doc.error(at, f"event: {problem.message}")
            else:
                self.doc.diagnostics.append(problem)
        return event

    def _set(self, event: Mapping[str, Any], changes: Mapping[str, Any]) -> Mapping[str, Any]:
        changed = copy.deepcopy(dict(event))
        for key, value in changes.items():
            *parents, last = key.split(".")
            node: Any = changed
            for part in parents:
                node = _child(node, part)
                if node is None:
                    self._bad_set(key, f"the event has no '{part}'")
                    break
            else:
                if isinstance(node, dict):
                    node[last] = value
                elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                    node[int(last)] = value
                else:
                    self._bad_set(key, f"cannot set '{last}' there")
        return changed

    def _bad_set(self, key: str, why: str) -> None:
        self.doc.error((*self.at, "set", key), f"set: {key}: {why}", key=True)

    def _send(self, raw: _SendModel, at: yamlfile.Path_) -> SendCheck:
        self._known("rule", raw.rule, [r.name for r in self.config.rules], (*at, "rule"))
        self._known("sink", raw.sink, self.config.sinks, (*at, "sink"))
        rule = next((r for r in self.config.rules if r.name == raw.rule), None)
        if rule is not None and raw.index is not None and raw.index >= len(rule.sends):
            self.doc.error(
                (*at, "index"),
                f"index: rule '{rule.name}' has {len(rule.sends)} send(s), numbered from 0",
            )
        checks: dict[str, Check] = {}
        for name, value in raw.fields.items():
            check, problem = compile_check(value)
            if problem or check is None:
                self.doc.error((*at, "fields", name), f"{name}: {problem}")
            else:
                checks[name] = check
        return SendCheck(raw.rule, raw.sink, raw.index, checks)


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


_MISSING = object()


def _field(payload: Mapping[str, Any], path: str) -> Any:
    node: Any = payload
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def run_file(config: Config, path: Path) -> tuple[list[CaseResult], list[Diagnostic]]:
    """Every case of a test file run, or the file's located problems (then nothing is run)."""
    cases, diagnostics = load_cases(path, config)
    return [run_case(config, case) for case in cases], diagnostics


def run_case(config: Config, case: Case) -> CaseResult:
    """What happens to the case's event under ``config``, against what the case expects."""
    results = preview(config, case.event)
    matched = [r for r in results if r.matched]
    sends = [(r.rule, s) for r in matched for s in r.sends]
    failures = [
        [f"{rule} -> {send.sink}: the template failed: {send.error}"]
        for rule, send in sends
        if send.error
    ]
    if case.rules is not None:
        failures += _compare_rules(case.rules, results)
    if case.sinks is not None:
        got = {send.sink for _, send in sends}
        if got != case.sinks:
            failures.append([f"sinks: expected {_names(case.sinks)}, sent to {_names(got)}"])
    if case.nothing_sent and sends:
        failures.append([f"expected nothing sent; sent: {_sent(sends)}"])
    for check in case.sends:
        failures += _check_send(check, sends)
    return CaseResult(case, failures)


def _compare_rules(expected: frozenset[str], results: Sequence[PreviewRule]) -> list[list[str]]:
    got = {r.rule for r in results if r.matched}
    if got == expected:
        return []
    lines = [f"rules: expected {_names(expected)}, matched {_names(got)}"]
    lines += [f"  - {r.rule}: not matched: {r.reason}" for r in results if r.rule in expected - got]
    lines += [f"  + {r.rule}: matched, not expected" for r in results if r.rule in got - expected]
    return [lines]


def _check_send(check: SendCheck, sends: Sequence[tuple[str, PreviewSend]]) -> list[list[str]]:
    chosen = [(rule, send) for rule, send in sends if check.picks(rule, send)]
    if len(chosen) != 1:
        why = (
            f"{len(chosen)} sends match: name the rule, sink or index"
            if chosen
            else "nothing was sent"
        )
        return [[f"{check.label()}: {why} (sent: {_sent(sends)})"]]
    rule, send = chosen[0]
    if send.payload is None:
        return []  # its template failed: reported already
    failures = []
    where = f"{rule} -> {send.sink}"
    for path, field_check in check.fields.items():
        value = _field(send.payload, path)
        if value is _MISSING:
            has = ", ".join(send.payload)
            failures.append([f"{where}: {path}: not in the message (it has {has})"])
            continue
        for problem in problems(field_check, value):
            failures.append([f"{where}: {path} {problem[0]}", *problem[1:]])
    return failures


def _names(names: Any) -> str:
    return "[" + ", ".join(sorted(names)) + "]"


def _sent(sends: Sequence[tuple[str, PreviewSend]]) -> str:
    return ", ".join(f"{rule} -> {send.sink}" for rule, send in sends) or "nothing"


def report(results: Sequence[CaseResult], *, passed: bool = True) -> list[str]:
    """A test runner's lines: each case PASS or FAIL (and why), with ``passed`` the passes too."""
    lines = []
    for result in results:
        if result.passed:
            if passed:
                lines.append(f"PASS  {result.case.name}")
            continue
        lines.append(f"FAIL  {result.case.name}  ({result.case.file}:{result.case.line})")
        for failure in result.failures:
            lines += [f"      {line}" for line in failure]
    return lines
