"""The delivery log that the CLI and /metrics read: events, deliveries and attempts by id and by
filter, on every backend (purge: test_purge.py)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.store import NewEvent, Store
from tests.store.helpers import T0, attempt, delivery, event

pytestmark = pytest.mark.anyio


async def test_get_event_by_id_and_by_message_id(store: Store) -> None:
    """get_event finds an event by relay id or by sender message id, else None."""
    e = event(7)
    await store.ingest(e, [])
    assert await store.get_event(e.id) == await store.get_event("msg_7")
    found = await store.get_event("msg_7")
    assert found is not None
    assert (found.id, found.source, found.type, found.body) == (e.id, "clerk", e.type, e.body)
    assert await store.get_event("msg_8") is None


async def test_get_event_by_message_id_shared_by_sources_is_the_latest(store: Store) -> None:
    """Two sources may use the same message id: the latest received is found; a relay id that
    happens to equal another event's message id finds the event with that id."""
    older, newer = event(5, source="clerk", at=T0), event(5, source="resend", at=T0 + 60)
    odd = NewEvent("msg_9", "clerk", "msg_odd", "user.created", T0 + 120, b"{}")
    other = event(9, source="resend", at=T0 + 180)  # its message id is msg_9
    for e in (older, newer, odd, other):
        await store.ingest(e, [])
    found = await store.get_event("msg_5")
    assert found is not None
    assert found.id == newer.id
    found = await store.get_event("msg_9")
    assert found is not None
    assert found.id == "msg_9"


async def test_list_events_filters_by_type_glob_and_time(store: Store) -> None:
    """list_events is newest first and filters by type glob, received_at >= since and limit."""
    kinds = ["user.created", "session.created", "user.deleted"]
    for n, kind in enumerate(kinds):
        await store.ingest(event(n, type=kind, at=T0 + n), [])
    assert [e.type for e in await store.list_events()] == kinds[::-1]
    assert [e.type for e in await store.list_events(type_glob="user.*")] == [
        "user.deleted",
        "user.created",
    ]
    assert [e.type for e in await store.list_events(since=T0 + 1)] == [
        "user.deleted",
        "session.created",
    ]
    assert [e.type for e in await store.list_events(limit=1)] == ["user.deleted"]


async def test_count_deliveries_counts_each_events_deliveries_by_status_in_one_call(
    store: Store,
) -> None:
    """count_deliveries: per event asked for, its deliveries by status; an event without
    deliveries (or not stored) is absent; more than a chunk of ids (SQLite binds 500 at a time)
    is counted whole."""
    busy, quiet = event(1), event(2)
    await store.ingest(busy, [delivery(busy.id, i) for i in range(3)])
    await store.ingest(quiet, [])
    claimed = await store.claim_due(T0, 10, 60)
    assert len(claimed) == 3
    await store.record_delivered(attempt(claimed[0].id, code=200, error=None))
    await store.record_dead(attempt(claimed[1].id, code=400), claimed[1].id, "400")
    asked = [*(f"evt_missing_{n}" for n in range(600)), quiet.id, busy.id]
    assert await store.count_deliveries(asked) == {
        busy.id: {"delivered": 1, "dead": 1, "pending": 1}
    }
    assert await store.count_deliveries([]) == {}


async def test_list_deliveries_filters(store: Store) -> None:
    """list_deliveries filters by status, sink, rule, event, created_at >= since and limit."""
    a, b = event(1, at=T0), event(2, at=T0 + 10)
    await store.ingest(a, [delivery(a.id, 0, sink="slack", rule="r1"), delivery(a.id, 1)])
    await store.ingest(b, [delivery(b.id, 0, sink="email", rule="r2")])
    await store.record_dead(None, f"dlv_{a.id}_1", "no")

    async def ids(**filters: Any) -> list[str]:  # list_deliveries' keyword arguments
        return [d.id for d in await store.list_deliveries(**filters)]

    assert await ids() == [f"dlv_{b.id}_0", f"dlv_{a.id}_0", f"dlv_{a.id}_1"]
    assert await ids(status="dead") == [f"dlv_{a.id}_1"]
    assert await ids(sink="slack", status="pending") == [f"dlv_{a.id}_0"]
    assert await ids(rule="r2") == await ids(event_id=b.id) == await ids(since=T0 + 5)
    assert await ids(limit=1) == [f"dlv_{b.id}_0"]
    with pytest.raises(ValueError, match="'lost' is not a valid DeliveryStatus"):
        await ids(status="lost")


@pytest.mark.parametrize(
    ("glob", "types"),
    [
        ("user.*", ["user.created", "user.deleted"]),
        ("*.created", ["email.created", "session.created", "user.created"]),
        ("user.?reated", ["user.created"]),
        ("[su]*.created", ["session.created", "user.created"]),
        ("[^u]*", ["email.created", "session.created", "[x]+(y)$"]),
        ("*[a-e]", ["email.created", "session.created", "user.created", "user.deleted"]),
        ("[]x[]*", ["[x]+(y)$"]),
        ("[x]+(y)$", []),
        ("?x]+(y)$", ["[x]+(y)$"]),
        ("User.*", []),
        ("user.created[", []),
        ("", []),
    ],
)
async def test_list_events_type_glob_is_sqlite_glob(
    store: Store, glob: str, types: list[str]
) -> None:
    """type_glob has SQLite GLOB semantics on every backend: * ? [set] [^set], case-sensitive."""
    kinds = ["user.created", "session.created", "user.deleted", "email.created", "[x]+(y)$"]
    for n, kind in enumerate(kinds):
        await store.ingest(event(n, type=kind, at=T0 + n), [])
    assert sorted(e.type for e in await store.list_events(type_glob=glob)) == sorted(types)
