"""once and throttle in the store, on every backend: decided at ingest from the sends a rule
has taken per key (one row per (rule, key), locked while read and written); what is held back
is stored as suppressed with its reason, never dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from relay.store import Store
from tests.store.helpers import T0, event, stored
from tests.store.steps_helpers import DAY, limit

pytestmark = pytest.mark.anyio
HOUR = 3600.0


async def status(store: Store, n: int) -> tuple[str, str | None]:
    d = await stored(store, f"dlv_{event(n).id}")
    return d.status, d.last_error


async def test_once_sends_the_first_and_holds_back_every_later_one_for_ever(store: Store) -> None:
    """once: the first event for a key is sent; every later one, a year later too, is stored
    suppressed with the reason; another key is sent."""
    assert (await limit(store, 1, "ada@example.com", T0)).outcome == "sent"
    assert (await limit(store, 2, "ada@example.com", T0 + 1)).outcome == "suppressed"
    assert (await limit(store, 3, "ada@example.com", T0 + 365 * DAY)).outcome == "suppressed"
    assert (await limit(store, 4, "grace@example.com", T0 + 2)).outcome == "sent"
    assert await status(store, 1) == ("pending", None)
    assert await status(store, 3) == ("suppressed", "held ada@example.com")
    claimed = {c.id for c in await store.claim_due(T0 + 366 * DAY, 10, 60)}
    assert claimed == {f"dlv_{event(n).id}" for n in (1, 4)}


async def test_throttle_allows_max_in_any_window_of_per(store: Store) -> None:
    """throttle max 2 per 1h is a sliding window: two sends, then held back until the first
    of them is an hour old, then one more, and so on."""
    at = {1: T0, 2: T0 + 10, 3: T0 + 20, 4: T0 + HOUR + 1, 5: T0 + HOUR + 5, 6: T0 + HOUR + 11}
    outcomes = [
        (await limit(store, n, "org_1", t, max=2, per_s=HOUR)).outcome for n, t in at.items()
    ]
    assert outcomes == ["sent", "sent", "suppressed", "sent", "suppressed", "sent"]


async def test_a_limit_without_a_key_holds_the_deliveries_back(store: Store) -> None:
    """A key that did not render (None) cannot tell events apart: held back, saying why."""
    assert (await limit(store, 1, None, T0)).outcome == "suppressed"
    assert (await status(store, 1))[0] == "suppressed"


async def test_replicas_racing_on_one_key_send_it_once(make_store: Callable[[], Store]) -> None:
    """Two replicas ingest 20 events with the same once key at the same moment: exactly one is
    sent, the others are suppressed."""
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        outcomes = await asyncio.gather(
            *(limit(replicas[n % 2], n, "ada@example.com", T0) for n in range(20))
        )
        assert sorted(o.outcome for o in outcomes) == ["sent"] + ["suppressed"] * 19
        suppressed = await replicas[0].list_deliveries(status="suppressed")
        assert len(suppressed) == 19
    finally:
        for replica in replicas:
            await replica.close()


async def test_replicas_racing_on_a_throttle_row_that_exists_send_only_what_it_allows(
    make_store: Callable[[], Store],
) -> None:
    """The throttle's row for a key exists (a send two hours ago, no longer counted); four
    replicas then ingest 12 events each at once for it: max 1 per hour, so exactly one is
    sent. Ten rounds, a key each."""
    replicas = [make_store() for _ in range(4)]
    for replica in replicas:
        await replica.open()
    try:
        for round in range(10):
            key, first = f"org_{round}", 1000 * (round + 1)
            old = await limit(replicas[0], first, key, T0 - 2 * HOUR, max=1, per_s=HOUR)
            assert old.outcome == "sent"
            outcomes = await asyncio.gather(
                *(
                    limit(replicas[n % 4], first + 1 + n, key, T0, max=1, per_s=HOUR)
                    for n in range(48)
                )
            )
            assert sorted(o.outcome for o in outcomes) == ["sent"] + ["suppressed"] * 47
    finally:
        for replica in replicas:
            await replica.close()
