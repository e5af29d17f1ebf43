"""The suppression list, on every backend: one row per (address, scope), the first cause kept;
looked up by address and scope (an index probe), removed by scope or all at once, listed newest
first with filters."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from relay.recipients.addresses import Reason, Suppression
from relay.store import SQLiteStore, Store
from relay.store.suppressions import lookup
from tests.store.helpers import T0, sqlite_only

pytestmark = pytest.mark.anyio

ADA = "ada@example.com"
BOUNCED = Suppression(ADA, "all", Reason.BOUNCED, "msg_b1", T0)
LEFT = Suppression(ADA, "onboarding", Reason.UNSUBSCRIBED, None, T0 + 1)
GRACE = Suppression("grace@example.com", "all", Reason.COMPLAINED, "msg_c1", T0 + 2)


async def test_an_address_has_one_suppression_per_scope_and_keeps_its_first_cause(
    store: Store,
) -> None:
    """Adding says whether it was new; a second bounce of the same address changes nothing."""
    assert await store.add_suppression(BOUNCED) is True
    again = Suppression(ADA, "all", Reason.MANUAL, "msg_b2", T0 + 50)
    assert await store.add_suppression(again) is False
    assert await store.add_suppression(LEFT) is True  # another scope: another row
    assert await store.list_suppressions(address=ADA) == [LEFT, BOUNCED]


async def test_the_lookup_finds_only_the_addresses_and_scopes_asked_for(store: Store) -> None:
    for suppression in (BOUNCED, LEFT, GRACE):
        await store.add_suppression(suppression)
    assert await store.suppressions_for([ADA], ["all"]) == [BOUNCED]
    found = await store.suppressions_for([ADA, "grace@example.com"], ["all", "onboarding"])
    assert sorted(found, key=lambda s: s.created_at) == [BOUNCED, LEFT, GRACE]
    assert await store.suppressions_for(["bob@example.com"], ["all", "onboarding"]) == []
    assert await store.suppressions_for(["grace@example.com"], ["onboarding"]) == []
    assert await store.suppressions_for([], ["all"]) == []
    assert await store.suppressions_for([ADA], []) == []


async def test_remove_takes_one_scope_or_every_scope_of_an_address(store: Store) -> None:
    for suppression in (BOUNCED, LEFT, GRACE):
        await store.add_suppression(suppression)
    assert await store.remove_suppressions(ADA, "onboarding") == 1
    assert await store.suppressions_for([ADA], ["all", "onboarding"]) == [BOUNCED]
    await store.add_suppression(LEFT)
    assert await store.remove_suppressions(ADA) == 2
    assert await store.remove_suppressions(ADA) == 0
    assert await store.list_suppressions() == [GRACE]


async def test_listing_is_newest_first_filtered_and_limited(store: Store) -> None:
    for suppression in (BOUNCED, LEFT, GRACE):
        await store.add_suppression(suppression)
    assert await store.list_suppressions() == [GRACE, LEFT, BOUNCED]
    assert await store.list_suppressions(limit=1) == [GRACE]
    assert await store.list_suppressions(scope="all") == [GRACE, BOUNCED]
    assert await store.list_suppressions(reason=Reason.UNSUBSCRIBED) == [LEFT]
    assert await store.list_suppressions(address=ADA, scope="all") == [BOUNCED]


async def test_a_replica_sees_what_another_added(make_store: Callable[[], Store]) -> None:
    """Two stores on one database (replicas): one adds, the other's lookup finds it."""
    one, two = make_store(), make_store()
    await one.open()
    await two.open()
    try:
        assert await two.suppressions_for([ADA], ["all"]) == []
        await one.add_suppression(BOUNCED)
        assert await two.suppressions_for([ADA], ["all"]) == [BOUNCED]
        assert await two.add_suppression(BOUNCED) is False
    finally:
        await one.close()
        await two.close()


@sqlite_only
async def test_the_lookup_is_an_index_probe_not_a_scan(store: SQLiteStore) -> None:
    """SQLite's plan for the worker's lookup searches the primary key; it never scans."""
    raw = sqlite3.connect(store.path)
    plan = " ".join(
        str(row[-1])
        for row in raw.execute(
            f"EXPLAIN QUERY PLAN {lookup(2, 2)}", [ADA, "b@x.org", "all", "onboarding"]
        )
    )
    raw.close()
    assert "SEARCH suppressions USING PRIMARY KEY (address=? AND scope=?)" in plan
    assert "SCAN" not in plan
