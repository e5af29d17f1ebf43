"""Checks on a rendered field, as a golden test (``relay.config.goldens``) states them, and the
readable differences a failed one reports.

A field check in ``rules.test.yaml`` is a plain value (the field must equal it) or a mapping of
one or more of these, all of which must hold:

- ``equals``: the rendered value is exactly this (a string, number, list, mapping or null);
- ``contains`` / ``not_contains``: (a string) it contains this text, (a list) this item;
- ``regex``: (a string) this Python regular expression matches somewhere in it (``re.search``);
- ``json``: (a mapping or list, or a string holding JSON) it holds this JSON as a subset: each
  key given with a value holding the given one; a list's given items in order, others between.

``problems(check, value)`` gives the reasons a value fails, each a list of lines (the first a
summary, the rest a diff), or an empty list when it passes.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from relay.errors import did_you_mean

__all__ = ["CHECKS", "compile_check", "difference", "problems", "shown"]

CHECKS = ("equals", "contains", "not_contains", "regex", "json")
MAX_SHOWN_LINES = 12
Check = Mapping[str, Any]  # check name -> expected (a regex compiled)


def compile_check(raw: Any) -> tuple[Check | None, str | None]:
    """The check a test file's value states, or why it is not one."""
    if not isinstance(raw, Mapping):
        return {"equals": raw}, None
    unknown = [key for key in raw if key not in CHECKS]
    if unknown or not raw:
        what = (
            f"unknown check '{unknown[0]}'{did_you_mean(str(unknown[0]), CHECKS)}"
            if unknown
            else "an empty check"
        )
        return None, (
            f"{what} (use {', '.join(CHECKS)}; to compare with a mapping, write equals: {{...}})"
        )
    check = dict(raw)
    if "regex" in check:
        if not isinstance(check["regex"], str):
            return None, "regex: must be a string"
        try:
            check["regex"] = re.compile(check["regex"])
        except re.error as exc:
            return None, f"regex: invalid regular expression: {exc}"
    return check, None


def problems(check: Check, value: Any) -> list[list[str]]:
    """Why ``value`` fails ``check``: one list of lines per failed part; empty when it holds."""
    found: list[list[str]] = []
    if "equals" in check and value != check["equals"]:
        found.append(["is not the expected value", *difference(check["equals"], value)])
    for key, negate in (("contains", False), ("not_contains", True)):
        if key in check and _contains(value, check[key]) is negate:
            verb = "contains" if negate else "does not contain"
            found.append([f"{verb} {shown(check[key])}", *_near(value, check[key], negate)])
    if "regex" in check:
        pattern: re.Pattern[str] = check["regex"]
        if not isinstance(value, str) or pattern.search(value) is None:
            found.append([f"does not match /{pattern.pattern}/", *_quoted(value)])
    if "json" in check:
        misses = _subset(check["json"], _as_json(value), "")
        if misses:
            found.append(["does not hold the expected JSON", *misses])
    return found


def difference(
    expected: Any, rendered: Any, labels: tuple[str, str] = ("expected", "rendered")
) -> list[str]:
    """Expected against rendered: a unified diff of their lines (of their pretty JSON when not
    both strings), or the two values on one line each when both are short."""
    if not (isinstance(expected, str) and isinstance(rendered, str)):
        expected, rendered = _pretty(expected), _pretty(rendered)
    if "\n" not in expected.rstrip("\n") and "\n" not in rendered.rstrip("\n"):
        width = max(map(len, labels)) + 1
        return [f"  {label + ':':<{width}} {shown(value)}"
                for label, value in zip(labels, (expected, rendered), strict=True)]  # fmt: skip
    lines = difflib.unified_diff(
        expected.splitlines(), rendered.splitlines(), *labels, lineterm="", n=2
    )
    return [f"  {line}" for line in lines]


def shown(value: Any, limit: int = 200) -> str:
    """A value quoted for a report: JSON, clipped to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _quoted(value: Any) -> list[str]:
    """The rendered value, a few lines of it, under the summary."""
    text = value if isinstance(value, str) else _pretty(value)
    lines = text.splitlines() or [""]
    more = len(lines) - MAX_SHOWN_LINES
    shown_lines = [f"  | {line}" for line in lines[:MAX_SHOWN_LINES]]
    return [*shown_lines, f"  | … ({more} more lines)"] if more > 0 else shown_lines


def _near(value: Any, part: Any, present: bool) -> list[str]:
    """The lines of a long text that matter to a ``contains`` check: the lines holding ``part``
    (it should not be there) or those closest to it (it should); else the text's first lines."""
    if isinstance(value, str) and isinstance(part, str) and value.count("\n") >= MAX_SHOWN_LINES:
        lines = value.splitlines()
        if present:
            near = [line for line in lines if part in line]
        else:
            near = difflib.get_close_matches(part, lines, n=3, cutoff=0.3)
            near = sorted(near, key=lines.index)
        if near:
            what = "the lines holding it" if present else "the closest lines"
            return [f"  {what} (of {len(lines)}):", *(f"  | {line}" for line in near)]
    return _quoted(value)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _contains(value: Any, part: Any) -> bool:
    if isinstance(value, str):
        return isinstance(part, str) and part in value
    if isinstance(value, list):
        return part in value
    if isinstance(value, Mapping):
        return part in value
    return False


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _subset(expected: Any, actual: Any, at: str) -> list[str]:
    """Where ``actual`` fails to hold ``expected``: one line per place, empty when it holds."""
    where = at or "(the value)"
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"  {where}: expected an object, rendered {shown(actual)}"]
        misses: list[str] = []
        for key, item in expected.items():
            path = f"{at}.{key}" if at else str(key)
            if key not in actual:
                misses.append(f"  {path}: missing (expected {shown(item)})")
            else:
                misses += _subset(item, actual[key], path)
        return misses
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"  {where}: expected a list, rendered {shown(actual)}"]
        return _in_order(expected, actual, at)
    if expected != actual:
        return [f"  {where}: expected {shown(expected)}, rendered {shown(actual)}"]
    return []


def _in_order(expected: Sequence[Any], actual: Sequence[Any], at: str) -> list[str]:
    """Each expected item held by a later actual item than the one before it."""
    start = 0
    for item in expected:
        found = next(
            (j for j in range(start, len(actual)) if not _subset(item, actual[j], "")), None
        )
        if found is None:
            return [f"  {at or '(the list)'}: no item (after the ones matched) holds {shown(item)}"]
        start = found + 1
    return []
