"""The matcher: event-type globs and conditions."""

from __future__ import annotations

import pytest

from relay.rules import Condition, Rule, match, valid_pattern
from relay.templates import Environments

ENV = Environments.for_dir(None).text


def rule(name: str, *patterns: str, when: str | None = None) -> Rule:
    return Rule(name, patterns, Condition(ENV, when) if when else None, ())


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("user.created", "user.created", True),
        ("user.created", "user.updated", False),
        ("user.*", "user.deleted", True),
        ("organizationMembership.*", "organizationMembership.created", True),
        ("organizationMembership.*", "organization.created", False),
        ("organization*", "organizationMembership.created", True),
        ("User.created", "user.created", False),
        ("session.?nded", "session.ended", True),
        ("*", "brandNew.eventType", True),
    ],
)
def test_glob_patterns(pattern: str, event_type: str, expected: bool) -> None:
    """Patterns are case-sensitive globs over the whole event type."""
    assert Rule.pattern_matches(pattern, event_type) is expected


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("user.created", True),
        ("session.ended", True),
        ("session.", True),
        ("user.created2", False),
        ("xsession.ended", False),
        ("user.updated", False),
        ("", False),
    ],
)
def test_a_rule_matches_a_type_that_any_of_its_patterns_matches(
    event_type: str, expected: bool
) -> None:
    rule = Rule("r", ("user.created", "session.*"), None, ())
    assert rule.matches_type(event_type) is expected
    assert Rule("none", (), None, ()).matches_type(event_type) is False


@pytest.mark.parametrize("pattern", ["", "user created", "user.[abc]", "a/b"])
def test_invalid_patterns_are_explained(pattern: str) -> None:
    """Empty patterns and characters outside names and wildcards are rejected with a reason."""
    assert valid_pattern(pattern) is not None


def test_a_list_of_patterns_matches_any() -> None:
    """A rule with several patterns matches an event that any of them matches."""
    r = rule("m", "organizationMembership.created", "organizationMembership.deleted")
    assert r.matches({"type": "organizationMembership.deleted", "data": {}})
    assert not r.matches({"type": "organizationMembership.updated", "data": {}})


def test_condition_filters_on_payload() -> None:
    """A `when` condition must hold for the rule to match."""
    r = rule("pro", "user.*", when="data.public_metadata.plan == 'pro'")
    assert r.matches({"type": "user.created", "data": {"public_metadata": {"plan": "pro"}}})
    assert not r.matches({"type": "user.created", "data": {"public_metadata": {"plan": "free"}}})


def test_condition_on_missing_field_does_not_match_and_explains() -> None:
    """A condition over a field the event lacks is false, and explain() says why."""
    r = rule("pro", "user.*", when="data.public_metadata.plan == 'pro'")
    event = {"type": "user.deleted", "data": {"id": "user_1", "deleted": True}}
    assert not r.matches(event)
    assert r.condition is not None
    assert "public_metadata" in (r.condition.explain(event) or "")


def test_match_keeps_file_order_and_ignores_unknown_types() -> None:
    """match() returns matching rules in order; an unknown event type matches only wildcards."""
    rules = [rule("a", "user.*"), rule("b", "*"), rule("c", "session.*")]
    assert [r.name for r in match(rules, {"type": "user.created"})] == ["a", "b"]
    assert [r.name for r in match(rules, {"type": "brandNew.thing"})] == ["b"]
    assert match(rules, {"type": 42}) == []
