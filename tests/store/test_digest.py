"""Digests in the store, on every backend: one open batch row per (rule, key); each event joins
exactly one batch, in the commit that stores it; the batch's delivery is due when its window
ends or once it holds ``max``; ``lead`` (first: now) sends the first event at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from relay.store import DeliveryStatus, Store
from tests.store.helpers import T0, event
from tests.store.steps_helpers import digest

pytestmark = pytest.mark.anyio


async def members(store: Store, batch_id: str | None) -> list[str]:
    """The event ids of a digest's events, as the worker reads them."""
    assert batch_id is not None, "not a digest step"
    bodies = await store.digest_events(batch_id, 0)
    return [b.decode() for b in bodies]


def body(n: int) -> str:
    return event(n).body.decode()


async def test_events_in_a_window_join_one_batch_sent_when_it_ends(store: Store) -> None:
    """The first event opens a batch closing 10 minutes later, with its digest scheduled for
    then; the next ones join it; the digest holds them all, oldest first."""
    opened = await digest(store, 1, T0)
    ((step,),) = [opened.steps]
    assert (step.outcome, step.batch_id) == ("opened", f"bat_{event(1).id}")
    joined = [(await digest(store, n, T0 + n)).steps[0] for n in (2, 3)]
    assert [(s.outcome, s.batch_id) for s in joined] == [("joined", step.batch_id)] * 2
    (d,) = [d for d in await store.list_deliveries() if d.status is not DeliveryStatus.BATCHED]
    assert (d.status, d.next_attempt_at, d.batch_id, d.event_id) == (
        "scheduled", T0 + 600, step.batch_id, event(1).id,
    )  # fmt: skip
    assert len(await store.list_deliveries(status="batched")) == 3
    assert await members(store, step.batch_id) == [body(1), body(2), body(3)]
    assert await store.promote_due(T0 + 599) == 0
    assert await store.promote_due(T0 + 600) == 1
    (claimed,) = await store.claim_due(T0 + 600, 10, 60)
    assert (claimed.id, claimed.batch_id) == (d.id, step.batch_id)


async def test_a_claimed_digest_takes_no_more_events(store: Store) -> None:
    """Claiming the digest closes its batch: an event after that (even one whose clock is
    behind) opens a new batch rather than join one already being sent."""
    first = (await digest(store, 1, T0)).steps[0]
    await store.promote_due(T0 + 600)
    await store.claim_due(T0 + 600, 10, 60)
    late = (await digest(store, 2, T0 + 300)).steps[0]  # a replica whose clock is behind
    assert late.outcome == "opened"
    assert late.batch_id != first.batch_id
    assert await members(store, first.batch_id) == [body(1)]


async def test_a_full_batch_is_due_at_once_and_the_next_event_opens_another(store: Store) -> None:
    """With max 3, the third event fills the batch: its digest is due now; the fourth opens a
    new batch."""
    outcomes = [(await digest(store, n, T0 + n, max=3)).steps[0] for n in (1, 2, 3, 4)]
    assert [s.outcome for s in outcomes] == ["opened", "joined", "full", "opened"]
    first, fourth = outcomes[0].batch_id, outcomes[3].batch_id
    assert first != fourth
    (full,) = await store.list_deliveries(batch_id=first, status="scheduled")
    assert full.next_attempt_at == T0 + 3  # due_full: the filling event's time
    assert await members(store, first) == [body(1), body(2), body(3)]
    assert await members(store, fourth) == [body(4)]


async def test_max_one_sends_each_event_as_its_own_digest(store: Store) -> None:
    """max 1: each event opens a batch that is full at once."""
    outcomes = [(await digest(store, n, T0, max=1)).steps[0] for n in (1, 2)]
    assert [s.outcome for s in outcomes] == ["full", "full"]
    assert len(await store.list_deliveries(status="scheduled")) == 2


async def test_lead_sends_the_first_event_at_once_and_digests_the_rest(store: Store) -> None:
    """first: now. The first event goes out at once on its own and opens the batch; the next
    ones make and join its digest, due when the window that began with the first ends; after
    that the next event leads again."""
    lead = (await digest(store, 1, T0, lead=True)).steps[0]
    assert lead.outcome == "lead"
    (own,) = await store.list_deliveries()
    assert (own.status, own.batch_id, own.next_attempt_at) == ("pending", None, T0)
    assert await store.list_deliveries(batch_id=lead.batch_id) == []  # no digest yet
    rest = [(await digest(store, n, T0 + n, lead=True)).steps[0] for n in (2, 3)]
    assert [(s.outcome, s.batch_id) for s in rest] == [("joined", lead.batch_id)] * 2
    (made,) = await store.list_deliveries(batch_id=lead.batch_id, status="scheduled")
    assert (made.next_attempt_at, made.event_id) == (T0 + 600, event(2).id)
    assert await members(store, lead.batch_id) == [body(2), body(3)]
    again = (await digest(store, 4, T0 + 600, lead=True)).steps[0]
    assert again.outcome == "lead"
    assert again.batch_id != lead.batch_id


async def test_a_lead_without_followers_leaves_no_digest(store: Store) -> None:
    """first: now, and nothing else in the window: no digest is ever made."""
    await digest(store, 1, T0, lead=True)
    await digest(store, 2, T0 + 700, lead=True)
    assert {d.status for d in await store.list_deliveries()} == {"pending"}


async def test_an_expired_batch_is_closed_by_the_next_event_even_if_never_claimed(
    store: Store,
) -> None:
    """An event after the window's end opens a new batch, whether or not a worker has claimed
    the old digest yet; the old one keeps its events."""
    first = (await digest(store, 1, T0)).steps[0]
    second = (await digest(store, 2, T0 + 600)).steps[0]
    assert second.outcome == "opened"
    assert second.batch_id != first.batch_id
    assert await members(store, first.batch_id) == [body(1)]


async def test_each_key_has_its_own_batch(store: Store) -> None:
    """Batches are per (rule, key): another key or another rule opens its own."""
    a = (await digest(store, 1, T0, key="org_a")).steps[0]
    b = (await digest(store, 2, T0, key="org_b")).steps[0]
    other = (await digest(store, 3, T0, key="org_a", rule="other")).steps[0]
    again = (await digest(store, 4, T0, key="org_a")).steps[0]
    assert [s.outcome for s in (a, b, other, again)] == ["opened", "opened", "opened", "joined"]
    assert again.batch_id == a.batch_id
    assert len({a.batch_id, b.batch_id, other.batch_id}) == 3


async def test_two_sends_make_one_digest_each_over_the_same_events(store: Store) -> None:
    """A digest rule with two sends: each event has its place per send; each send has its
    digest, over the same events."""
    await digest(store, 1, T0, sends=2)
    step = (await digest(store, 2, T0 + 1, sends=2)).steps[0]
    assert step.batch_id is not None
    digests = await store.list_deliveries(batch_id=step.batch_id, status="scheduled")
    assert sorted(d.send_index for d in digests) == [0, 1]
    assert await store.digest_events(step.batch_id, 1) == await store.digest_events(
        step.batch_id, 0
    )


async def test_replicas_ingesting_at_once_keep_one_open_batch_and_every_event_once(
    make_store: Callable[[], Store],
) -> None:
    """Two replicas ingest 60 events of one digest key at once (max 7): every event is in
    exactly one batch, no batch holds more than 7, and at most one batch was open at a time
    (each closed full before the next opened)."""
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        results = await asyncio.gather(
            *(digest(replicas[n % 2], n, T0 + n / 100, max=7) for n in range(60))
        )
        steps = [r.steps[0] for r in results]
        by_batch: dict[str, int] = {}
        for s in steps:
            assert s.batch_id is not None
            by_batch[s.batch_id] = by_batch.get(s.batch_id, 0) + 1
        store = replicas[0]
        batched = await store.list_deliveries(status="batched", limit=1000)
        assert sorted(d.event_id for d in batched) == sorted(event(n).id for n in range(60))
        assert max(by_batch.values()) <= 7
        full = [b for b, n in by_batch.items() if n == 7]
        assert len(full) >= len(by_batch) - 1  # only the last batch may still be open
        for batch_id, n in by_batch.items():
            assert len(await store.digest_events(batch_id, 0)) == n
            assert len(await store.list_deliveries(batch_id=batch_id, status="scheduled")) == 1
    finally:
        for replica in replicas:
            await replica.close()
