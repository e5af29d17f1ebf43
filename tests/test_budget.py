"""relay.ingest.budget: request bodies held in memory, bounded across requests, and the memory given
back once a burst of them is over."""

from __future__ import annotations

import asyncio

import pytest

from relay.ingest.budget import TRIM_AFTER, BodyBudget, BudgetSpentError


def test_reservations_stop_at_the_limit_and_release_gives_room_back() -> None:
    """Holdings take bytes until the limit; one that does not fit takes nothing and is
    refused; releasing makes room again."""
    budget = BodyBudget(100, trim=lambda: None)
    first, second, third = budget.holding(), budget.holding(), budget.holding()
    first.take(60)
    second.take(40)
    with pytest.raises(BudgetSpentError):
        third.take(1)
    assert (budget.held, third.size, budget.refused) == (100, 0, 1)
    first.release()
    third.take(50)
    assert budget.held == 90
    first.release()  # twice: nothing more
    assert budget.held == 90


@pytest.mark.anyio
async def test_memory_is_trimmed_once_after_a_burst_is_over() -> None:
    """After a burst of TRIM_AFTER bytes or more is all released, memory is trimmed once (after
    trim_delay_s); a small one is not trimmed, nor a burst still in progress."""
    trims: list[int] = []
    budget = BodyBudget(4 * TRIM_AFTER, trim=lambda: trims.append(budget.held), trim_delay_s=0)
    small = budget.holding()
    small.take(1000)
    small.release()
    burst = [budget.holding() for _ in range(4)]
    for holding in burst:
        holding.take(TRIM_AFTER // 2)
    for holding in burst[:3]:
        holding.release()
    await asyncio.sleep(0.01)
    assert trims == []
    burst[3].release()
    await asyncio.sleep(0.01)
    assert trims == [0]
    assert budget.trims == 1
