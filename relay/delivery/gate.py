"""A sink's gate: how many attempts it may start now, and what each attempt's outcome changes.

Three things hold a sink back, each its own: its free slots (``concurrency``), its pace
(``rate_limit_per_s``, and a pause after a 429 that says how long to wait:
``relay.delivery.pacing``) and its circuit (``relay.delivery.breaker``). The worker keeps one
``SinkGate`` per sink for as long as it runs; a reload changes its settings, not its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.delivery.breaker import CircuitBreaker, CircuitState
from relay.delivery.pacing import Pace
from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.sinks.base import SinkSettings

MAX_PAUSE_S = 300.0  # a 429's Retry-After pauses its whole sink for this long at most


@dataclass(frozen=True, slots=True)
class GateChange:
    """What an attempt's outcome changed, for the worker to log: the circuit's state before it
    moved, and how long the sink was newly paused for."""

    circuit_from: CircuitState | None = None
    paused_s: float | None = None


@dataclass
class SinkGate:
    settings: SinkSettings
    breaker: CircuitBreaker = field(init=False)
    pace: Pace = field(default_factory=Pace)
    busy: int = 0  # attempts in flight

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.settings.circuit)
        self.configure(self.settings)

    def configure(self, settings: SinkSettings) -> None:
        """Take the sink's current settings (a reload may have changed them)."""
        self.settings = settings
        self.breaker.settings = settings.circuit
        self.pace.rate_per_s = settings.rate_limit_per_s

    def allowance(self, now: float) -> int:
        """How many attempts may start now; the caller then claims up to that many and says how
        many it ``started`` (or ``unused`` if none: a circuit's probe is then given back)."""
        free = self.settings.concurrency - self.busy
        return self.breaker.allowance(now, self.pace.allowance(now, free))

    def started(self, count: int) -> None:
        self.busy += count
        self.pace.spend(count)

    def unused(self) -> None:
        self.breaker.release_probe()

    def finished(self) -> None:
        """An attempt ended, recorded or not; a probe that ended without a verdict (its
        delivery dead early, say) lets the next one go."""
        self.busy -= 1
        if self.breaker.state is CircuitState.HALF_OPEN:
            self.breaker.release_probe()

    def record(self, now: float, error: DeliveryError | None) -> GateChange:
        """An attempt's outcome. A 429 that says how long to wait pauses the whole sink that
        long (up to MAX_PAUSE_S; the delivery itself waits the full Retry-After): the upstream
        pacing the sink, not failing, so it does not count for the circuit. A permanent error
        is the message's fault, not the sink's: it does not count either."""
        if (
            isinstance(error, RetryableError)
            and error.status == 429
            and error.retry_after_s is not None
        ):
            pause_s = min(max(error.retry_after_s, 0.0), MAX_PAUSE_S)
            return GateChange(paused_s=pause_s if self.pace.pause(now + pause_s) else None)
        if isinstance(error, PermanentError):
            return GateChange()
        breaker = self.breaker
        before = breaker.record_success() if error is None else breaker.record_failure(now)
        return GateChange(circuit_from=before if breaker.state is not before else None)
