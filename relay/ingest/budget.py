"""Request bodies held in memory, bounded across all requests, and the memory given back after.

Each request reserves the bytes of its body before reading it (all of its ``Content-Length`` at
once, or chunk by chunk when it has none) and releases them when it is answered. When the budget
is spent, the request is refused with 503 and ``Retry-After`` before its body is read: a crowd of
half-sent bodies cannot hold more than ``limit`` bytes, however many connections it opens.

After a burst, what the burst's connections held (their objects are in reference cycles, and
hold the bytes received but not yet read) waits for a full garbage collection, and CPython gives
freed memory back to the C allocator, whose heap keeps it: the process would stay at its peak
for good (800 half-sent 1 MiB bodies: 182 MB, 166 MB after they closed, against 64 MB before).
So once the bodies of a burst (``TRIM_AFTER`` bytes or more at once) have all been released, a
full collection runs and ``malloc_trim(0)`` returns the free pages to the system (glibc only;
elsewhere only the collection): 70 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("relay.ingest.budget")
TRIM_AFTER = 8 * 1024 * 1024  # a burst of at least this many bytes held is trimmed after
TRIM_DELAY_S = 1.0  # once the bytes held fell back, wait this long (a burst in waves) to trim


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    with contextlib.suppress(OSError, AttributeError):
        malloc_trim = ctypes.CDLL(name).malloc_trim
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim.restype = ctypes.c_int

        def trim() -> None:
            malloc_trim(0)

        return trim
    return None


class BudgetSpentError(Exception):
    """The budget cannot hold a request's body now: answer 503, Retry-After."""


class BodyBudget:
    """At most ``limit`` bytes of request bodies held at once, by every request together."""

    def __init__(
        self,
        limit: int,
        *,
        trim: Callable[[], None] | None = None,
        trim_delay_s: float = TRIM_DELAY_S,
    ) -> None:
        self.limit = limit
        self.trim_delay_s = trim_delay_s
        self.held = 0
        self.peak = 0  # the most held at once since the last trim
        self.refused = 0  # reservations refused, ever
        self.trims = 0
        self._trim = trim if trim is not None else _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None

    def holding(self) -> Holding:
        """What one request holds of the budget, to take as it reads and release once answered."""
        return Holding(self)

    def reserve(self, size: int) -> bool:
        """Hold ``size`` more bytes if the budget has them; False (nothing held) if not."""
        if self.held + size > self.limit:
            self.refused += 1
            return False
        self.held += size
        self.peak = max(self.peak, self.held)
        return True

    def release(self, size: int) -> None:
        self.held -= size
        if self.held == 0 and self.peak >= TRIM_AFTER and self._trim is not None:
            self._schedule_trim()

    def _schedule_trim(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: trim now
            self._trim_now()
            return
        self._timer = loop.call_later(self.trim_delay_s, self._trim_now)

    def _trim_now(self) -> None:
        self._timer = None
        if self.held != 0 or self._trim is None:  # a new burst began: its end trims
            return
        peak, self.peak = self.peak, 0
        gc.collect()  # the burst's connections and their buffers are in reference cycles
        self._trim()
        self.trims += 1
        log.debug("memory trimmed after a burst", extra={"fields": {"peak_bytes": peak}})


class Holding:
    """The bytes one request holds of a ``BodyBudget``."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or BudgetSpentError (nothing more held)."""
        if not self.budget.reserve(size):
            raise BudgetSpentError
        self.size += size

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self.budget.release(size)
