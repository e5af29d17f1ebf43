"""Addresses as relay compares them: case and blanks do not matter, a display name is not part
of the address, and nothing else is merged (dots, +tags, ß): two mailboxes are never one."""

from __future__ import annotations

import pytest

from relay.recipients.addresses import (
    Reason,
    Suppression,
    addresses,
    normalise,
    scope_problem,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada@Example.COM\t", "ada@example.com"),
        ("ADA@EXAMPLE.COM", "ada@example.com"),
        ("Ada Lovelace <Ada@Example.com>", "ada@example.com"),
        ('"Lovelace, Ada" < ada@example.com >', "ada@example.com"),
        ("ada.lovelace+news@gmail.com", "ada.lovelace+news@gmail.com"),  # dots, tags: kept
        ("straße@example.de", "straße@example.de"),  # lower-cased, never casefolded to ss
        ("ADA@BÜCHER.example", "ada@bücher.example"),  # no punycode
    ],
)
def test_normalise_trims_and_lower_cases_and_goes_no_further(raw: str, expected: str) -> None:
    """Case, surrounding blanks and a display name are dropped; the rest is kept as written."""
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "ada", "ada@", "@example.com", "ada @example.com", "ada@exa mple.com",
     "ada@example.com\x00", "ada@exa<mple.com", "a" * 330 + "@example.com", None, 42,
     ["ada@example.com"]],
)  # fmt: skip
def test_what_is_no_address_normalises_to_none(raw: object) -> None:
    """No @, an empty part, blanks or control characters inside, too long, not a string."""
    assert normalise(raw) is None


def test_case_and_whitespace_variants_are_one_address() -> None:
    """Every spelling a template or a webhook may give of one address compares equal."""
    variants = ["ada@example.com", " ADA@example.com", "Ada@Example.Com ", "Ada <ada@EXAMPLE.com>"]
    assert {normalise(v) for v in variants} == {"ada@example.com"}


def test_addresses_split_a_rendered_list_or_string() -> None:
    """A list stays a list; a string is split on commas outside quotes; blanks are dropped."""
    assert addresses(["a@x.org", " b@x.org "]) == ["a@x.org", "b@x.org"]
    assert addresses('"Doe, Jane" <jane@x.org>, ada@x.org,') == [
        '"Doe, Jane" <jane@x.org>',
        "ada@x.org",
    ]
    assert addresses(None) == []


@pytest.mark.parametrize(
    ("scope", "ok"),
    [("all", True), ("onboarding", True), ("news-letter_2.0", True), ("Onboarding", False),
     ("", False), ("on boarding", False), ("x" * 65, False)],
)  # fmt: skip
def test_a_scope_is_all_or_a_category_name(scope: str, ok: bool) -> None:
    assert (scope_problem(scope) is None) is ok


def test_a_suppression_describes_its_scope_reason_time_and_event() -> None:
    """What a suppressed delivery's reason says."""
    bounced = Suppression("ada@example.com", "all", Reason.BOUNCED, "msg_b1", 1_772_442_845.0)
    assert bounced.describe() == (
        "ada@example.com is suppressed for all email: bounced at 2026-03-02T09:14:05Z, event msg_b1"
    )
    left = Suppression("ada@example.com", "onboarding", Reason.UNSUBSCRIBED, None, 0.0)
    assert left.describe() == (
        "ada@example.com is suppressed for 'onboarding' email: unsubscribed at 1970-01-01T00:00:00Z"
    )
