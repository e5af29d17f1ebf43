"""Pacing a sink's attempts: a steady rate, and a pause when the upstream says to slow down.

Providers limit how fast they accept requests (Resend's API a few a second per team by default,
a Slack incoming webhook about one a second) and answer 429 with a ``Retry-After`` beyond it.
Without pacing, a burst of events (a bulk user import) meets a wall of 429s: every delivery is
retried on its own, and the failures open the sink's circuit. ``Pace`` holds a sink to
``rate_limit_per_s`` (a token bucket holding one second of sends, at least one), and after a 429
that says how long to wait, starts no attempt on that sink until then: one answer pauses the
sink, not just the delivery that got it. Both are per worker process, as concurrency is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Pace:
    rate_per_s: float | None = None  # None: no limit but concurrency
    paused_until: float = -math.inf
    _tokens: float = 0.0
    _updated: float | None = None

    def allowance(self, now: float, wanted: int) -> int:
        """How many attempts may start at ``now``, at most ``wanted``; ``spend`` what starts."""
        if now < self.paused_until:
            return 0
        if self.rate_per_s is None:
            return wanted
        burst = max(1.0, self.rate_per_s)
        elapsed = burst / self.rate_per_s if self._updated is None else now - self._updated
        self._tokens = min(burst, self._tokens + max(0.0, elapsed) * self.rate_per_s)
        self._updated = now
        return min(wanted, math.floor(self._tokens))

    def spend(self, started: int) -> None:
        if self.rate_per_s is not None:
            self._tokens -= started

    def pause(self, until: float) -> bool:
        """Start nothing before ``until``; whether that pauses the sink longer than it was."""
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True
