"""A worker in a process of its own, for the cancel/send race (tests/store/test_cancel.py).

``python -m tests.store.race_worker URL STOP`` claims due deliveries from the store at URL, one at
a time, and "sends" each: a delivery whose id ends in an even digit is delivered, any other
fails and is due again at once (so it would be sent again and again, unless a cancel stops it).
Each attempt's ``started_at`` is the wall-clock time just before its claim was asked for. It
stops once the file STOP exists and nothing is left to claim.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from relay.store import Attempt, open_store

T0 = 1_000_000.0  # the store tests' clock (tests/store/helpers.py): every delivery is due


async def work(url: str, stop: Path) -> None:
    store = open_store(url)
    await store.open(create=False)
    try:
        while True:
            asked_at = time.time()
            claimed = await store.claim_due(T0, 1, lease_s=60)
            if not claimed:
                if stop.exists():  # noqa: ASYNC240 (a stat, once per idle poll)
                    return
                await asyncio.sleep(0.001)
                continue
            (one,) = claimed
            if one.id[-1] in "02468":
                done = Attempt(one.id, asked_at, 1.0, 200, None)
                await store.record_delivered(done, lease=one.lease_until)
            else:
                failed = Attempt(one.id, asked_at, 1.0, 503, "503 from the upstream")
                await store.record_retry(failed, T0, lease=one.lease_until)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1], Path(sys.argv[2])))
