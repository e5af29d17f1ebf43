"""A circuit breaker per sink: stop hammering an upstream that keeps failing.

After ``failure_threshold`` retryable failures in a row the circuit opens: the worker makes no
attempts for that sink (its deliveries stay due; no attempt budget is spent) until the cooldown
has passed. Then one probe attempt is let through (half-open): success closes the circuit,
failure opens it again with the cooldown doubled, up to ``max_cooldown_s``. Permanent errors
(a bad recipient, a 422) say nothing about the upstream's health and do not count.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.sinks.base import CircuitSettings


class CircuitState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass
class CircuitBreaker:
    settings: CircuitSettings
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    cooldown_s: float = 0.0
    probing: bool = False

    def allowance(self, now: float, wanted: int) -> int:
        """How many attempts may start now (``wanted`` when closed, 0 or 1 otherwise)."""
        if self.state is CircuitState.OPEN and now - self.opened_at >= self.cooldown_s:
            self.state = CircuitState.HALF_OPEN
        if self.state is CircuitState.CLOSED:
            return wanted
        if self.state is CircuitState.HALF_OPEN and not self.probing and wanted > 0:
            self.probing = True
            return 1
        return 0

    def release_probe(self) -> None:
        """A probe allowance was not used (nothing was due)."""
        self.probing = False

    def record_success(self) -> CircuitState:
        """Returns the state before, so callers can log a transition."""
        before = self.state
        self.state, self.failures, self.probing = CircuitState.CLOSED, 0, False
        self.cooldown_s = 0.0
        return before

    def record_failure(self, now: float) -> CircuitState:
        before = self.state
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN:
            self._open(now, min(self.cooldown_s * 2, self.settings.max_cooldown_s))
        elif self.state is CircuitState.CLOSED and self.failures >= self.settings.failure_threshold:
            self._open(now, self.settings.cooldown_s)
        return before

    def _open(self, now: float, cooldown_s: float) -> None:
        self.state, self.opened_at, self.cooldown_s, self.probing = (
            CircuitState.OPEN,
            now,
            cooldown_s,
            False,
        )
