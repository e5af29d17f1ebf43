"""Durations in rules.yaml and on the command line: a number and one unit."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from relay.config.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("3d", 259200), ("2w", 1209600), ("1.5h", 5400),
     (" 10s ", 10), ("0s", 0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    """Each unit is its number of seconds; surrounding blanks are ignored."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3", "3 d", "3days", "d", "-1h", "1h30m", "", "1y"])
def test_parse_duration_refuses(text: str) -> None:
    """Anything but a number and one unit is refused, saying what is accepted."""
    with pytest.raises(ValueError, match=r"is not a duration: write a number and a unit"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(259200, "3d"), (5400, "90m"), (90, "90s"),
                                               (1.5, "1.5s"), (1209600, "2w")])  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    """The largest unit that divides the seconds exactly."""
    assert format_duration(seconds) == text


class _Model(BaseModel):
    delay: Duration


def test_duration_field_takes_text_and_refuses_a_bare_number() -> None:
    """A ``Duration`` field holds seconds; a bare number is refused: which unit was meant?"""
    assert _Model.model_validate({"delay": "3d"}).delay == 259200
    with pytest.raises(ValidationError, match=r"3 has no unit: write 3s"):
        _Model(delay=3)
