"""The circuit breaker as a pure state machine, driven by an explicit clock."""

from __future__ import annotations

from relay.delivery.breaker import CircuitBreaker, CircuitState
from relay.sinks.base import CircuitSettings

SETTINGS = CircuitSettings(failure_threshold=3, cooldown_s=30, max_cooldown_s=100)


def tripped(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(SETTINGS)
    for _ in range(3):
        breaker.record_failure(now)
    return breaker


def test_closed_allows_everything_until_the_threshold() -> None:
    """Below the threshold of consecutive failures the circuit stays closed."""
    breaker = CircuitBreaker(SETTINGS)
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allowance(0, 4) == 4


def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = CircuitBreaker(SETTINGS)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.state is CircuitState.CLOSED


def test_threshold_opens_and_blocks_until_cooldown() -> None:
    """At the threshold the circuit opens: no attempts until the cooldown has passed."""
    breaker = tripped(now=100)
    assert breaker.state is CircuitState.OPEN
    assert breaker.allowance(129.9, 4) == 0


def test_after_cooldown_one_probe_then_closed_on_success() -> None:
    """After the cooldown exactly one probe is allowed; its success closes the circuit."""
    breaker = tripped(now=100)
    assert breaker.allowance(130, 4) == 1
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allowance(130, 4) == 0  # the probe is in flight
    assert breaker.record_success() is CircuitState.HALF_OPEN
    # mypy keeps the state narrowed by the assert above; record_success() changed it
    assert breaker.state is CircuitState.CLOSED  # type: ignore[comparison-overlap]
    assert breaker.allowance(131, 4) == 4


def test_failed_probe_reopens_with_doubled_cooldown_capped() -> None:
    """A failed probe opens the circuit again for twice as long, up to max_cooldown_s."""
    breaker = tripped(now=0)
    assert breaker.allowance(30, 1) == 1
    breaker.record_failure(30)
    assert (breaker.state, breaker.cooldown_s) == (CircuitState.OPEN, 60)
    assert breaker.allowance(89, 1) == 0
    assert breaker.allowance(90, 1) == 1
    breaker.record_failure(90)
    assert breaker.cooldown_s == 100


def test_unused_probe_is_released() -> None:
    """When nothing was due for the probe, the next tick may probe again."""
    breaker = tripped(now=0)
    assert breaker.allowance(30, 1) == 1
    breaker.release_probe()
    assert breaker.allowance(31, 1) == 1
