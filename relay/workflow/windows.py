"""Send windows: the days and hours of the week a send may go out, in a time zone.

``Window`` is pure time arithmetic on Unix seconds with ``zoneinfo``: ``contains(t, zone)`` says
whether ``t`` falls inside, ``next_opening(t, zone)`` is ``t`` itself when it does, else the
first instant after ``t`` when the window is open. Wall-clock times are what count, so 09:00 in
Europe/Berlin is 08:00 UTC in winter and 07:00 UTC in summer. Across a change of the clocks:

- an opening time that does not exist that day (clocks jump from 02:00 to 03:00 and the window
  opens at 02:30) opens at the jump, the first instant whose wall-clock time is past it;
- an opening time that happens twice (clocks fall back from 03:00 to 02:00) opens at the first.

``parse_days`` and ``parse_hours`` read what ``rules.yaml`` says (``mon-fri``, ``[sat, sun]``,
``"09:00-17:00"``); ``zone_named`` reads a time zone name that may come from event data, so it
refuses anything but a plain IANA name before ``zoneinfo`` looks at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
DAY_S = 86400
_HOURS = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")


def parse_days(spec: str | list[str]) -> frozenset[int]:
    """Weekdays (0 = Monday) from ``mon-fri``, ``sat,sun``, ``[mon, wed, fri]`` or ``fri-mon``
    (a range may wrap over the weekend); ValueError saying what is accepted."""
    parts = spec if isinstance(spec, list) else spec.split(",")
    days: set[int] = set()
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"{part!r} is not a day: write mon, tue, wed, thu, fri, sat or sun")
        first, dash, last = part.strip().lower().partition("-")
        ends = [first, last] if dash else [first]
        for name in ends:
            if name not in DAY_NAMES:
                raise ValueError(
                    f"'{name}' is not a day: write mon, tue, wed, thu, fri, sat or sun "
                    "(a range: mon-fri)"
                )
        start, end = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    if not days:
        raise ValueError("list at least one day (mon-fri)")
    return frozenset(days)


def parse_hours(spec: str) -> tuple[int, int]:
    """Seconds after midnight of the opening and the closing (exclusive) of ``"09:00-17:00"``;
    ``24:00`` closes at midnight. ValueError saying what is accepted."""
    found = _HOURS.fullmatch(spec.strip())
    if found is None:
        raise ValueError(f"'{spec}' is not a span of hours: write HH:MM-HH:MM, e.g. 09:00-17:00")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"'{spec}' is not a span of hours: times run from 00:00 to 24:00")
    start, end = (h1 * 60 + m1) * 60, (h2 * 60 + m2) * 60
    if end <= start:
        raise ValueError(
            f"'{spec}': the window must close after it opens, on the same day "
            "(for a night window, use two rules or 00:00-06:00 and 22:00-24:00 on two sends)"
        )
    return start, end


def zone_named(name: object) -> ZoneInfo | None:
    """The time zone called ``name`` (``Europe/Berlin``, ``UTC``), or None when ``name`` is not a
    plain IANA zone name that exists. Safe on event data: a path, a NUL or a long text is refused
    before ``zoneinfo`` sees it."""
    if not isinstance(name, str) or len(name) > 64 or not _ZONE.fullmatch(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class Window:
    """Open on ``days`` (0 = Monday) from ``start_s`` to ``end_s`` (seconds after local
    midnight, end exclusive)."""

    days: frozenset[int]
    start_s: int
    end_s: int

    def contains(self, t: float, zone: ZoneInfo) -> bool:
        local = datetime.fromtimestamp(t, zone)
        return local.weekday() in self.days and self.start_s <= _seconds_of_day(local) < self.end_s

    def next_opening(self, t: float, zone: ZoneInfo) -> float:
        """``t`` if the window is open then, else when it next opens (Unix seconds)."""
        local = datetime.fromtimestamp(t, zone)
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            if day.weekday() not in self.days:
                continue
            if ahead == 0:
                now_s = _seconds_of_day(local)
                if self.start_s <= now_s < self.end_s:
                    return t
                if now_s >= self.start_s:
                    continue  # today's window has closed
            return _first_instant_at(day, self.start_s, zone)
        raise AssertionError("a window has at least one day")  # pragma: no cover

    def describe(self) -> str:
        """``mon-fri 09:00-17:00`` (days as ranges where they run on)."""
        return f"{describe_days(self.days)} {_hhmm(self.start_s)}-{_hhmm(self.end_s)}"


def describe_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "every day"
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = [
        DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs
    ]
    return ",".join(names)


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}"


def _seconds_of_day(local: datetime) -> float:
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def _first_instant_at(day: date, start_s: int, zone: ZoneInfo) -> float:
    """The first instant of ``day`` whose wall-clock time in ``zone`` is ``start_s`` or later."""
    wall = datetime.combine(day, time()) + timedelta(seconds=start_s)
    first = wall.replace(tzinfo=zone, fold=0).timestamp()  # the earlier one, if it is twice
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first
    # ``wall`` falls in a gap (the clocks jumped over it): the opening is the jump. fold=1 maps
    # it with the offset after the jump, to an instant before it; search between the two.
    low, high = wall.replace(tzinfo=zone, fold=1).timestamp(), first
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high
