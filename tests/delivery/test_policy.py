"""The retry policy: a pure function of (settings, attempt, error, rand) to a delay or None."""

from __future__ import annotations

import pytest

from relay.delivery.policy import JITTER, MAX_RETRY_AFTER_S, next_delay
from relay.errors import PermanentError, RetryableError
from relay.sinks.base import RetrySettings

SETTINGS = RetrySettings(max_attempts=10, first_backoff_s=2.0, max_backoff_s=60.0)
RETRYABLE = RetryableError("post to example: 503 Service Unavailable", status=503)


def middle() -> float:
    return 0.5


def lowest() -> float:
    return 0.0


def highest() -> float:
    return 1.0


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0)],
)
def test_backoff_doubles_from_first_backoff(attempt: int, delay: float) -> None:
    """With no jitter (rand 0.5) the delay is first_backoff_s * 2**(attempt-1)."""
    assert next_delay(SETTINGS, attempt, RETRYABLE, rand=middle) == delay


@pytest.mark.parametrize("attempt", [6, 7, 9])
def test_backoff_is_capped_at_max_backoff(attempt: int) -> None:
    """Once the doubling passes max_backoff_s the delay stays at max_backoff_s."""
    assert next_delay(SETTINGS, attempt, RETRYABLE, rand=middle) == 60.0


@pytest.mark.parametrize("attempt", [1, 3, 8])
def test_jitter_stays_within_bounds(attempt: int) -> None:
    """rand 0 and 1 give the lowest and highest delay: the base scaled by 1 -/+ JITTER."""
    base = next_delay(SETTINGS, attempt, RETRYABLE, rand=middle)
    assert base is not None
    assert next_delay(SETTINGS, attempt, RETRYABLE, rand=lowest) == pytest.approx(
        base * (1 - JITTER)
    )
    assert next_delay(SETTINGS, attempt, RETRYABLE, rand=highest) == pytest.approx(
        base * (1 + JITTER)
    )


def test_jitter_is_twenty_percent() -> None:
    """The documented jitter is +-20 %."""
    assert JITTER == 0.2


def test_first_retry_with_defaults_is_within_ten_seconds() -> None:
    """With default settings the first retry comes within 10 s, whatever the jitter."""
    defaults = RetrySettings()
    for rand in (lowest, middle, highest):
        delay = next_delay(defaults, 1, RETRYABLE, rand=rand)
        assert delay is not None
        assert 0 < delay <= 10


def test_default_schedule_spans_roughly_a_day() -> None:
    """The default schedule keeps retrying for between 12 and 36 hours (Svix retries ~28 h)."""
    defaults = RetrySettings()
    delays = []
    attempt = 1
    while (delay := next_delay(defaults, attempt, RETRYABLE, rand=middle)) is not None:
        delays.append(delay)
        attempt += 1
    assert attempt == defaults.max_attempts
    assert 12 * 3600 <= sum(delays) <= 36 * 3600


@pytest.mark.parametrize("retry_after_s", [0.0, 1.0, 30.0, 3600.0])
def test_retry_after_overrides_backoff(retry_after_s: float) -> None:
    """A Retry-After from the upstream is the delay, exactly, whatever the attempt or jitter."""
    error = RetryableError("429", status=429, retry_after_s=retry_after_s)
    for attempt in (1, 5):
        assert next_delay(SETTINGS, attempt, error, rand=highest) == retry_after_s


def test_retry_after_may_exceed_max_backoff() -> None:
    """Retry-After is honoured even when it is longer than max_backoff_s."""
    error = RetryableError("429", status=429, retry_after_s=600.0)
    assert next_delay(SETTINGS, 1, error, rand=middle) == 600.0 > SETTINGS.max_backoff_s


def test_retry_after_is_bounded_to_a_day() -> None:
    """A Retry-After longer than a day is cut to a day; a negative one means now."""
    huge = RetryableError("429", status=429, retry_after_s=10 * 24 * 3600.0)
    negative = RetryableError("429", status=429, retry_after_s=-5.0)
    assert next_delay(SETTINGS, 1, huge) == MAX_RETRY_AFTER_S == 24 * 3600.0
    assert next_delay(SETTINGS, 1, negative) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 9])
def test_permanent_error_stops(attempt: int) -> None:
    """A permanent error is never retried."""
    error = PermanentError("post to example: 422 Unprocessable Entity", status=422)
    assert next_delay(SETTINGS, attempt, error, rand=middle) is None


@pytest.mark.parametrize(("attempt", "retried"), [(9, True), (10, False), (11, False)])
def test_attempts_exhausted_stops(attempt: int, retried: bool) -> None:
    """After max_attempts attempts there is no next one, even for a Retry-After."""
    with_after = RetryableError("429", status=429, retry_after_s=1.0)
    for error in (RETRYABLE, with_after):
        assert (next_delay(SETTINGS, attempt, error, rand=middle) is not None) is retried


def test_single_attempt_budget_never_retries() -> None:
    """max_attempts 1 means the first failure is final."""
    once = RetrySettings(max_attempts=1)
    assert next_delay(once, 1, RETRYABLE, rand=middle) is None
