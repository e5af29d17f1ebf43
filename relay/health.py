"""What a running relay has seen of its own health, for ``/readyz`` to tell the truth.

Ready means: the store can commit now, and the worker (if this process runs one) can claim. The
evidence is the outcome of the real work, as it happens: ingest reports each commit it waited for
(``store``), the worker each claim (``claims``). A check that failed stays failed until the same
work succeeds again, or (for the store, when nothing is being ingested) until the store's own
probe says it can take a commit; ``relay.server.ops`` runs that probe. Nothing here touches the
store: reporting an outcome is a dict write on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

STORE = "store"  # ingest's commits
CLAIMS = "claims"  # the worker's claims of due deliveries
MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class Failure:
    """A check's latest outcome, when it failed: what, since when (its first failure in a row)
    and whether the failure may pass by itself (the store unavailable: locked, full, down)."""

    error: str
    since: float
    transient: bool


@dataclass
class Health:
    clock: Callable[[], float] = time.time
    failures: dict[str, Failure] = field(default_factory=dict)

    def ok(self, check: str) -> None:
        """The work ``check`` names just succeeded."""
        if self.failures:
            self.failures.pop(check, None)

    def failed(self, check: str, error: BaseException, *, transient: bool) -> None:
        """The work ``check`` names just failed with ``error``."""
        before = self.failures.get(check)
        since = before.since if before is not None else self.clock()
        text = " ".join(str(error).split())[:MAX_REASON_CHARS] or type(error).__name__
        self.failures[check] = Failure(text, since, transient)

    def failing(self) -> dict[str, Failure]:
        return dict(self.failures)
