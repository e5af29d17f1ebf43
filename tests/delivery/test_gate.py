"""SinkGate: a sink's free slots, pace and circuit, combined."""

from __future__ import annotations

from relay.delivery.breaker import CircuitState
from relay.delivery.gate import MAX_PAUSE_S, GateChange, SinkGate
from relay.errors import PermanentError, RetryableError
from relay.sinks.http import HttpSettings

T0 = 1_000.0


def gate(**settings: object) -> SinkGate:
    return SinkGate(HttpSettings.model_validate({"type": "http", "url": "http://x/", **settings}))


def test_the_allowance_is_the_least_of_free_slots_pace_and_circuit() -> None:
    g = gate(concurrency=4, rate_limit_per_s=3)
    assert g.allowance(T0) == 3  # the pace: a second's worth
    g.started(3)
    assert g.allowance(T0 + 10) == 1  # the slots: 3 of 4 busy
    for _ in range(3):
        g.finished()
    g.configure(g.settings.model_copy(update={"concurrency": 2, "rate_limit_per_s": None}))
    assert g.allowance(T0 + 10) == 2  # a reload's settings apply at once


def test_failures_open_the_circuit_but_a_429_with_retry_after_pauses_instead() -> None:
    g = gate(circuit={"failure_threshold": 2})
    limited = RetryableError("429", status=429, retry_after_s=MAX_PAUSE_S * 10)
    assert g.record(T0, limited) == GateChange(paused_s=MAX_PAUSE_S)  # capped
    assert g.record(T0, limited) == GateChange()  # already paused that long
    assert g.allowance(T0 + MAX_PAUSE_S - 1) == 0
    assert g.record(T0, PermanentError("422", status=422)) == GateChange()
    assert g.breaker.state is CircuitState.CLOSED
    assert g.record(T0, RetryableError("503", status=503)) == GateChange()
    assert g.record(T0, RetryableError("503", status=503)) == GateChange(CircuitState.CLOSED)
    # mypy keeps the state narrowed by the assert above; record() changed it
    assert g.breaker.state is CircuitState.OPEN  # type: ignore[comparison-overlap]
