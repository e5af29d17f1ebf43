"""PostgreSQL specifics: several replicas (one pool each) on one database, keepalives, an
exhausted pool, an unreachable server.

PostgreSQL tests use RELAY_TEST_POSTGRES_URL (default: the local server's ``test`` database), each
in a fresh schema of its own. Without a reachable server they skip, except under CI=true, where
that is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import psycopg
import pytest

from relay.errors import StoreError, StoreUnavailableError
from relay.store import IngestOutcome, NewEvent, Store
from relay.store.group import PendingIngest
from relay.store.postgres import PostgresStore
from relay.store.postgres_sql import glob_to_regex
from relay.store.steps import IngestResult
from tests.conftest import POSTGRES_URL
from tests.store.helpers import (
    T0,
    attempt,
    delivery,
    event,
    forbid_fallback,
    ingest_one,
    postgres_only,
)

pytestmark = pytest.mark.anyio


async def test_postgres_connections_use_tcp_keepalives_unless_the_url_says(
    postgres_url: str,
) -> None:
    """Every pooled connection has TCP keepalives (30 s idle, 3 probes 10 s apart), so one to a
    server that vanished without closing it fails in about a minute; the URL's own values win."""

    async def parameters(url: str) -> dict[str, str]:
        store = PostgresStore(url)
        await store.open()
        try:
            async with store._cursor("look", transaction=False) as cursor:
                return cursor.connection.info.get_parameters()
        finally:
            await store.close()

    default = await parameters(postgres_url)
    assert {k: default.get(k) for k in ("keepalives_idle", "keepalives_count")} == {
        "keepalives_idle": "30",
        "keepalives_count": "3",
    }
    assert default.get("connect_timeout") == "10"
    chosen = await parameters(f"{postgres_url}&keepalives_idle=5&connect_timeout=3")
    assert (chosen.get("keepalives_idle"), chosen.get("connect_timeout")) == ("5", "3")


@postgres_only
async def test_postgres_replicas_claim_each_due_delivery_exactly_once(
    make_store: Callable[[], Store],
) -> None:
    """Two replicas with four claimers each race over 200 due deliveries: each delivery is
    claimed by exactly one of them, and together they claim all."""
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        for n in range(20):
            e = event(n)
            await replicas[0].ingest(e, [delivery(e.id, i, due=T0 + i) for i in range(10)])

        async def claim_all(store: Store) -> list[str]:
            got = []
            while batch := await store.claim_due(T0 + 100, 7, lease_s=60):
                got += [c.id for c in batch]
            return got

        results = await asyncio.gather(*(claim_all(r) for r in replicas for _ in range(4)))
        claimed = [dlv for result in results for dlv in result]
        assert len(claimed) == len(set(claimed)) == 200
        assert await replicas[1].claim_due(T0 + 100, 1000, 60) == []
        rows = await replicas[1].list_deliveries(limit=1000)
        assert {d.lease_until for d in rows} == {T0 + 160}
    finally:
        for replica in replicas:
            await replica.close()


@postgres_only
async def test_postgres_lease_of_a_dead_replica_expires_and_another_claims(
    make_store: Callable[[], Store],
) -> None:
    """A replica that dies mid-attempt keeps its lease; another replica starting does not steal
    it (release_all_leases is a no-op), and claims the delivery once the lease expires."""
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        dlv = await ingest_one(a)
        assert [c.id for c in await a.claim_due(T0, 10, lease_s=60)] == [dlv]
        await a.close()  # dies while sending: no attempt recorded, no release
        assert await b.release_all_leases() == 0
        assert await b.claim_due(T0 + 59.9, 10, 60) == []
        (c,) = await b.claim_due(T0 + 60, 10, 60)
        assert (c.id, c.attempts) == (dlv, 0)
        await b.record_delivered(attempt(dlv, T0 + 60, code=200, error=None))
        (d,) = await b.list_deliveries()
        assert (d.status, d.attempts, d.lease_until) == ("delivered", 1, None)
    finally:
        await a.close()
        await b.close()


@postgres_only
async def test_postgres_group_commit_batches_concurrent_ingests(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on SQLite: ingests that arrive together share one statement and one commit, and each
    caller still gets its own outcome."""
    assert isinstance(store, PostgresStore)
    sizes: list[int] = []
    real = store._commit

    async def counting(batch: Sequence[PendingIngest]) -> list[IngestResult | StoreError]:
        sizes.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(store._ingests, "_commit", counting)
    forbid_fallback(store, monkeypatch)
    again = NewEvent("evt_again_7", "clerk", "msg_7", "user.created", T0, b"{}")
    events = [event(n) for n in range(100)] + [again]  # one duplicate among them
    outcomes = await asyncio.gather(*(store.ingest(e, [delivery(e.id)]) for e in events))
    assert [o.value for o in outcomes].count("duplicate") == 1
    assert sum(sizes) == 101
    assert len(sizes) < 10
    assert len(await store.list_deliveries(limit=1000)) == 100


@postgres_only
async def test_postgres_concurrent_ingest_of_one_message_accepts_once(
    make_store: Callable[[], Store],
) -> None:
    """Two replicas ingesting the same 50 messages at once: exactly one ACCEPTED per message."""
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        calls = []
        for n in range(50):
            for name, replica in (("a", a), ("b", b)):
                e = NewEvent(f"evt_{name}{n}", "clerk", f"msg_{n}", "user.created", T0, b"{}")
                calls.append(replica.ingest(e, [delivery(e.id)]))
        outcomes = await asyncio.gather(*calls)
        for n in range(50):
            pair = outcomes[2 * n : 2 * n + 2]
            assert sorted(o.value for o in pair) == ["accepted", "duplicate"], f"msg_{n}"
        assert len(await a.list_events(limit=1000)) == 50
        assert len(await b.list_deliveries(limit=1000)) == 50
    finally:
        await a.close()
        await b.close()


async def test_postgres_no_free_connection_is_unavailable(postgres_url: str) -> None:
    """When the commit in progress does not finish within timeout_s (here, stuck on a lock), an
    ingest queued behind it raises StoreUnavailableError (503); the stuck ingest completes once
    the database lets it. An ingest that needs a connection when none frees up within
    timeout_s is unavailable too."""
    store = PostgresStore(postgres_url, max_size=1, timeout_s=0.5)
    await store.open()
    locker = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(store.ingest(event(1), []))
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as watch:
            for _ in range(100):  # until the first ingest waits for the lock
                cursor = await watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if (await cursor.fetchone()) != (0,):
                    break
                await asyncio.sleep(0.02)
        with pytest.raises(
            StoreUnavailableError, match="ingest clerk message msg_2: the store's commit in"
        ):
            await asyncio.wait_for(store.ingest(event(2), []), 10)  # not left waiting
        with pytest.raises(StoreUnavailableError, match="list events: couldn't get a connection"):
            await store.list_events()
        await locker.rollback()
        assert await first is IngestOutcome.ACCEPTED
        assert await store.ingest(event(2), []) is IngestOutcome.ACCEPTED
    finally:
        await locker.close()
        await store.close()


async def test_postgres_unreachable_server_is_unavailable_without_password() -> None:
    """A server that refuses connections fails open() with StoreUnavailableError; the text
    names the URL with its password as ***."""
    store = PostgresStore("postgresql://relay:hunter2@127.0.0.1:1/relay", timeout_s=1)
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert str(info.value).startswith(
        "open PostgreSQL store postgresql://relay:***@127.0.0.1:1/relay: connection failed"
    )
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreError, match="not open"):
        await store.ingest(event(), [])


def test_glob_to_regex() -> None:
    """SQLite GLOB patterns become anchored PostgreSQL regular expressions."""
    assert glob_to_regex("user.*") == r"^user\..*$"
    assert glob_to_regex("[^a-c]?") == "^[^a-c].$"
    assert glob_to_regex("[]\\]") == "^[\\]\\\\]$"
    assert glob_to_regex("a[b") == "(?!)"
