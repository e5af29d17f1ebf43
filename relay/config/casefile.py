"""The golden tests' file: beside ``rules.yaml``, ``rules.test.yaml`` says, event by event, what
must happen. This module reads and checks it against the config; ``relay.config.goldens`` runs
each case through ``preview`` (``relay test``, ``relay check``)::

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.config import yamlfile
from relay.config.checks import Check, compile_check
from relay.config.model import Config
from relay.config.samples import PreviewSend, parse_event
from relay.errors import Diagnostic, did_you_mean

__all__ = ["Case", "SendCheck", "load_cases", "tests_path"]


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
