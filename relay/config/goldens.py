"""Running golden tests (the cases ``relay.config.casefile`` reads from ``rules.test.yaml``):
each case's event through ``preview``, what happened against what the case expects, and the
report a test runner prints (PASS, or FAIL with each difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config.casefile import Case, SendCheck, load_cases, tests_path
from relay.config.checks import problems
from relay.config.model import Config
from relay.config.samples import PreviewRule, PreviewSend, preview
from relay.errors import Diagnostic
from relay.sources.base import lookup

__all__ = ["CaseResult", "report", "run_case", "run_file", "tests_path"]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    failures: list[list[str]] = field(default_factory=list)  # each: a summary, then details

    @property
    def passed(self) -> bool:
        return not self.failures


_MISSING = object()


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
        value = lookup(send.payload, path, _MISSING)
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
