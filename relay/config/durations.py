"""Durations as people write them in ``rules.yaml`` and on the command line: ``30s``, ``15m``,
``1h``, ``3d``, ``2w`` (a number, then one unit; decimals allowed: ``1.5h``).

``parse_duration`` gives seconds or a ValueError that says what is accepted; ``Duration`` is the
pydantic field type of a duration in ``rules.yaml`` (bound it with ``Field(ge=..., le=...)`` in
seconds, as any float), or with ``within("1s", "365d")``, whose errors say the bounds as
durations.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``30s``, ``15m``, ``1h``, ``3d``, ``2w``), or ValueError saying why."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"'{text}' is not a duration: write a number and a unit, s, m, h, d or w "
            "(30s, 15m, 1h, 3d)"
        )
    return float(found[1]) * UNITS[found[2]]


def format_duration(seconds: float) -> str:
    """The shortest exact form of ``seconds`` in the largest unit that divides it (``3d``)."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a duration such as 30s, 15m, 1h or 3d")
    raise ValueError(f"{value!r} has no unit: write {value:g}s, or another unit (15m, 1h, 3d)")


Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration)]
"""A ``rules.yaml`` duration, in seconds once validated; a bare number is refused (which unit?)."""


def within(low: str, high: str) -> AfterValidator:
    """Bounds for a ``Duration``, said as durations in its errors (``400d is more than 365d``):
    ``Annotated[Duration, within("1s", "365d")]``."""
    low_s, high_s = parse_duration(low), parse_duration(high)

    def check(seconds: float) -> float:
        if seconds < low_s:
            raise ValueError(f"{format_duration(seconds)} is less than {low}")
        if seconds > high_s:
            raise ValueError(f"{format_duration(seconds)} is more than {high}")
        return seconds

    return AfterValidator(check)
