"""Field checks of golden tests: each form, what a failure says, and malformed checks."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config.checks import compile_check, problems


def failures(raw: Any, value: Any) -> list[list[str]]:
    check, problem = compile_check(raw)
    assert problem is None
    assert check is not None
    return problems(check, value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("ada@example.com", "ada@example.com"),
        (None, None),
        (3, 3),
        ({"equals": {"a": [1, 2]}}, {"a": [1, 2]}),
        ({"contains": "Ada"}, "Hi Ada,"),
        ({"contains": "x"}, ["x", "y"]),
        ({"not_contains": "<script>"}, "&lt;script&gt;"),
        ({"regex": r"with\s+ada@"}, "sign in with\n ada@example.com"),
        ({"json": {"action": "added"}}, {"action": "added", "role": "org:member"}),
        ({"json": {"action": "added"}}, '{"action": "added", "n": 1}'),
        ({"json": [{"type": "divider"}]}, [{"type": "section"}, {"type": "divider", "x": 1}]),
        ({"contains": "Ada", "not_contains": "Bob", "regex": "^Hi"}, "Hi Ada"),
    ],
)
def test_a_check_that_holds_reports_nothing(raw: Any, value: Any) -> None:
    """Each form of check passes on a value it describes."""
    assert failures(raw, value) == []


def test_a_failed_equals_on_short_strings_shows_both() -> None:
    """Two one-line values are shown one above the other."""
    assert failures("Welcome, Ada!", "Welcome aboard, Ada!") == [
        [
            "is not the expected value",
            '  expected: "Welcome, Ada!"',
            '  rendered: "Welcome aboard, Ada!"',
        ]
    ]


def test_a_failed_equals_on_texts_is_a_unified_diff() -> None:
    """Multi-line values differ as a unified diff, expected against rendered."""
    [failure] = failures("Hi Ada,\nThanks.\nBye\n", "Hi Ada,\nThank you.\nBye\n")
    assert failure == [
        "is not the expected value",
        "  --- expected",
        "  +++ rendered",
        "  @@ -1,3 +1,3 @@",
        "   Hi Ada,",
        "  -Thanks.",
        "  +Thank you.",
        "   Bye",
    ]


def test_a_failed_json_subset_names_each_place() -> None:
    """A JSON subset failure lists each differing or missing key by its path."""
    [failure] = failures(
        {"json": {"action": "added", "user": {"id": "u1", "role": "admin"}}},
        {"action": "removed", "user": {"id": "u1"}},
    )
    assert failure == [
        "does not hold the expected JSON",
        '  action: expected "added", rendered "removed"',
        '  user.role: missing (expected "admin")',
    ]


def test_a_failed_contains_on_a_long_text_shows_the_closest_lines() -> None:
    """In a long text, the lines closest to the missing part are shown, not the whole text."""
    html = "\n".join([f"<p>line {i}</p>" for i in range(20)] + ["<strong>ada.old@x.org</strong>"])
    [failure] = failures({"contains": "<strong>ada@x.org</strong>"}, html)
    assert failure[:3] == [
        'does not contain "<strong>ada@x.org</strong>"',
        "  the closest lines (of 21):",
        "  | <strong>ada.old@x.org</strong>",
    ]


def test_not_contains_shows_where_it_is() -> None:
    """not_contains shows the lines that hold the unwanted text."""
    text = "\n".join(["ok"] * 15 + ["<script>x</script>"])
    [failure] = failures({"not_contains": "<script>"}, text)
    assert failure == [
        'contains "<script>"',
        "  the lines holding it (of 16):",
        "  | <script>x</script>",
    ]


def test_regex_on_a_non_string_fails() -> None:
    """A regex check on a number fails rather than matching its text."""
    assert failures({"regex": "1"}, 1)[0][0] == "does not match /1/"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"contain": "x"},
            "unknown check 'contain' (did you mean 'contains'?) (use equals, contains, "
            "not_contains, regex, json; to compare with a mapping, write equals: {...})",
        ),
        (
            {},
            "an empty check (use equals, contains, not_contains, regex, json; to compare "
            "with a mapping, write equals: {...})",
        ),
        (
            {"regex": "("},
            "regex: invalid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ({"regex": 3}, "regex: must be a string"),
    ],
)
def test_a_malformed_check_says_why(raw: Any, message: str) -> None:
    """An unknown, empty or invalid check is refused with its reason."""
    assert compile_check(raw) == (None, message)
