"""Send windows: days and hours in a time zone, and their next opening, wall-clock time across
the changes of the clocks (zoneinfo)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from relay.workflow.windows import Window, parse_days, parse_hours, zone_named

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS_9_TO_5 = Window(frozenset(range(5)), 9 * 3600, 17 * 3600)
EVERY_DAY_0230 = Window(frozenset(range(7)), 2 * 3600 + 1800, 4 * 3600)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("spec", "days"),
    [("mon-fri", {0, 1, 2, 3, 4}), ("sat,sun", {5, 6}), (["mon", "wed", "fri"], {0, 2, 4}),
     ("fri-mon", {4, 5, 6, 0}), ("Tue", {1}), ("mon-sun", set(range(7)))],
)  # fmt: skip
def test_parse_days(spec: str | list[str], days: set[int]) -> None:
    """Names, lists and ranges (a range may wrap over the weekend), any case."""
    assert parse_days(spec) == days


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mon-fry", "'fry' is not a day: write mon, tue, wed, thu, fri, sat or sun"),
        ([], "list at least one day"),
        ("", "'' is not a day"),
    ],
)
def test_parse_days_refuses(spec: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_days(spec)


def test_parse_hours() -> None:
    """HH:MM-HH:MM, the close exclusive; 24:00 is midnight at the end of the day."""
    assert parse_hours("09:00-17:00") == (32400, 61200)
    assert parse_hours("00:00-24:00") == (0, 86400)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("9-17", "'9-17' is not a span of hours: write HH:MM-HH:MM"),
        ("09:00-25:00", "times run from 00:00 to 24:00"),
        ("17:00-09:00", "the window must close after it opens, on the same day"),
        ("09:00-09:00", "the window must close after it opens"),
    ],
)
def test_parse_hours_refuses(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(spec)


@pytest.mark.parametrize(
    ("now", "opening"),
    [
        ("2026-01-14 10:00", "2026-01-14 10:00"),  # Wednesday 11:00 Berlin: open, itself
        ("2026-01-14 06:00", "2026-01-14 08:00"),  # 07:00: today at 09:00 (UTC+1)
        ("2026-01-14 16:00", "2026-01-15 08:00"),  # 17:00: closed (exclusive): tomorrow
        ("2026-01-16 17:00", "2026-01-19 08:00"),  # Friday evening: Monday
        ("2026-01-17 10:00", "2026-01-19 08:00"),  # Saturday: Monday
        ("2026-07-15 06:00", "2026-07-15 07:00"),  # summer: 09:00 Berlin is 07:00 UTC
    ],
)
def test_next_opening(now: str, opening: str) -> None:
    """The window's next opening, in wall-clock time where the window is."""
    assert WEEKDAYS_9_TO_5.next_opening(utc(now), BERLIN) == utc(opening)
    assert WEEKDAYS_9_TO_5.contains(utc(opening), BERLIN)
    assert WEEKDAYS_9_TO_5.contains(utc(now), BERLIN) == (now == opening)


def test_a_weekend_night_before_the_clocks_go_forward_opens_at_9_summer_time() -> None:
    """Saturday 28 March 2026, 20:00 Berlin; the clocks go forward on Sunday: Monday's 09:00 is
    summer time, 07:00 UTC (not 08:00)."""
    assert WEEKDAYS_9_TO_5.next_opening(utc("2026-03-28 19:00"), BERLIN) == utc("2026-03-30 07:00")


def test_a_weekend_night_before_the_clocks_go_back_opens_at_9_winter_time() -> None:
    """Saturday 24 October 2026, 20:00 Berlin; the clocks go back on Sunday: Monday's 09:00 is
    winter time, 08:00 UTC (not 07:00)."""
    assert WEEKDAYS_9_TO_5.next_opening(utc("2026-10-24 18:00"), BERLIN) == utc("2026-10-26 08:00")


def test_an_opening_the_clocks_jump_over_opens_at_the_jump() -> None:
    """29 March 2026: Berlin's clocks jump from 02:00 to 03:00, so 02:30 never happens; a
    window opening at 02:30 opens at 03:00 summer time (01:00 UTC), the first instant past it."""
    opening = EVERY_DAY_0230.next_opening(utc("2026-03-29 00:00"), BERLIN)
    assert opening == utc("2026-03-29 01:00")
    assert datetime.fromtimestamp(opening, BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_an_opening_that_happens_twice_opens_at_the_first() -> None:
    """25 October 2026: Berlin's clocks go back from 03:00 to 02:00, so 02:30 happens twice;
    the window opens at the first (00:30 UTC, summer time), and is still open at the second."""
    assert EVERY_DAY_0230.next_opening(utc("2026-10-24 23:00"), BERLIN) == utc("2026-10-25 00:30")
    assert EVERY_DAY_0230.contains(utc("2026-10-25 01:30"), BERLIN)  # 02:30 again, winter time


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/Berlin\x00", "a" * 80, 3, None,
     "", "Europe//Berlin"],
)  # fmt: skip
def test_zone_named_refuses_what_is_not_an_iana_zone(name: object) -> None:
    """Event data names a zone: anything but a known IANA name is None (the default applies),
    and a path never reaches zoneinfo."""
    assert zone_named(name) is None


def test_zone_named_knows_iana_names() -> None:
    assert zone_named("America/New_York") == ZoneInfo("America/New_York")
    assert zone_named("UTC") == ZoneInfo("UTC")


def test_describe() -> None:
    assert WEEKDAYS_9_TO_5.describe() == "mon-fri 09:00-17:00"
    assert Window(frozenset({0, 2, 5, 6}), 0, 86400).describe() == "mon,wed,sat-sun 00:00-24:00"
