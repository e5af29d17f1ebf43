"""Pace: a sink's rate limit (a token bucket of one second's sends) and its pause after a 429."""

from __future__ import annotations

import pytest

from relay.delivery.pacing import Pace

T0 = 1_000.0


def test_without_a_rate_only_the_wanted_count_limits() -> None:
    assert Pace().allowance(T0, 7) == 7


@pytest.mark.parametrize(
    ("rate", "steps", "allowed"),
    [
        # (seconds after the previous step, wanted) -> allowed; what is allowed is spent
        (2.0, [(0, 5), (0, 5), (0.5, 5), (0.4, 5), (0.1, 5), (100, 5)], [2, 0, 1, 0, 1, 2]),
        (0.5, [(0, 3), (1.0, 3), (1.0, 3), (10, 3)], [1, 0, 1, 1]),  # a burst of one
        (10.0, [(0, 3), (0, 20), (0.35, 20)], [3, 7, 3]),  # never more than wanted
    ],
)
def test_a_rate_allows_a_second_of_sends_at_once_then_the_rate(
    rate: float, steps: list[tuple[float, int]], allowed: list[int]
) -> None:
    pace, now, got = Pace(rate), T0, []
    for after_s, wanted in steps:
        now += after_s
        n = pace.allowance(now, wanted)
        pace.spend(n)
        got.append(n)
    assert got == allowed


def test_a_pause_allows_nothing_until_it_ends_and_only_lengthens() -> None:
    pace = Pace()
    assert pace.pause(T0 + 30) is True
    assert pace.pause(T0 + 10) is False  # a shorter pause does not shorten it
    assert pace.allowance(T0 + 29.9, 4) == 0
    assert pace.allowance(T0 + 30, 4) == 4
    assert pace.pause(T0 + 60) is True
    assert pace.allowance(T0 + 45, 4) == 0
