"""The retry policy: a pure function from (attempt, error) to the next delay, or None to stop."""

from __future__ import annotations

import random
from collections.abc import Callable

from relay.errors import DeliveryError, RetryableError
from relay.sinks.base import RetrySettings

MAX_RETRY_AFTER_S = 24 * 3600.0
JITTER = 0.2  # each computed delay is scaled by a factor in [1 - JITTER, 1 + JITTER]


def next_delay(
    settings: RetrySettings,
    attempt: int,
    error: DeliveryError,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the delivery is dead.

    ``attempt`` counts attempts made so far (1 after the first failure). Permanent errors and an
    exhausted attempt budget stop. A Retry-After from the upstream overrides the backoff (bounded
    to a day); otherwise the delay is ``first_backoff_s * 2**(attempt-1)``, capped at
    ``max_backoff_s``, with +-20 % jitter so that a burst of failures does not retry in lockstep.
    """
    if not isinstance(error, RetryableError) or attempt >= settings.max_attempts:
        return None
    if error.retry_after_s is not None:
        return min(max(error.retry_after_s, 0.0), MAX_RETRY_AFTER_S)
    base = min(settings.first_backoff_s * 2.0 ** (attempt - 1), settings.max_backoff_s)
    return base * (1.0 - JITTER + 2.0 * JITTER * rand())
