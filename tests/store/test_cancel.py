"""Cancel on a later event, on every backend: the cancelling event's commit moves its rule's
unsent deliveries with the same key to cancelled; one a worker is sending finishes its attempt,
which decides only if it delivered; and no claim after the cancel ever sends one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.store import DeliveryStatus, IngestOutcome, NewDelivery, Recorded, Store
from relay.store.postgres import PostgresStore
from relay.store.results import SENT_ANYWAY
from relay.store.sqlite import SQLiteStore
from relay.store.steps import Cancel
from tests.conftest import ROOT
from tests.store.helpers import T0, attempt, event, stored
from tests.store.steps_helpers import DAY, cancel, created

pytestmark = pytest.mark.anyio


async def test_a_cancel_before_due_cancels_the_scheduled_delivery_with_its_reason(
    store: Store,
) -> None:
    """A user.deleted before the day-3 email is due cancels it: cancelled, the reason naming
    the cancelling event; it is never promoted nor claimed."""
    dlv = await created(store, 1, T0 + 3 * DAY, "user_1")
    step = await cancel(store, 2, "user_1", at=T0 + DAY)
    assert (step.outcome, step.cancelled, step.in_flight) == (
        "cancelled", ((dlv, "email"),), (),
    )  # fmt: skip
    d = await stored(store, dlv)
    assert (d.status, d.last_error, d.updated_at) == (
        "cancelled", "cancelled by user.deleted msg_2", T0 + DAY,
    )  # fmt: skip
    assert await store.promote_due(T0 + 4 * DAY) == 0
    assert await store.claim_due(T0 + 4 * DAY, 10, 60) == []


async def test_a_cancel_after_due_catches_pending_and_failed_but_not_what_was_sent(
    store: Store,
) -> None:
    """Once due, a delivery is pending, or failed waiting for its retry: both are cancelled;
    one already delivered (or dead) is left as it is."""
    waiting = await created(store, 1, T0, "user_1")  # due now: pending
    retrying = await created(store, 2, T0, "user_1")
    sent = await created(store, 3, T0, "user_1")
    for claimed in await store.claim_due(T0, 10, 60):
        if claimed.id == retrying:
            await store.record_retry(attempt(retrying), T0 + 60, lease=claimed.lease_until)
        elif claimed.id == sent:
            ok = attempt(sent, code=200, error=None)
            await store.record_delivered(ok, lease=claimed.lease_until)
        else:
            await store.release([claimed.id], lease=claimed.lease_until)
    step = await cancel(store, 4, "user_1", at=T0 + 1)
    assert sorted(i for i, _ in step.cancelled) == sorted([waiting, retrying])
    statuses = {i: (await stored(store, i)).status for i in (waiting, retrying, sent)}
    assert statuses == {waiting: "cancelled", retrying: "cancelled", sent: "delivered"}
    assert await store.claim_due(T0 + DAY, 10, 60) == []


async def test_a_cancel_touches_only_its_rule_and_its_key(store: Store) -> None:
    """Another key, another rule, or a delivery with no cancel key at all is left alone."""
    mine = await created(store, 1, T0 + DAY, "user_1")
    other_key = await created(store, 2, T0 + DAY, "user_2")
    e = event(3)
    other_rule = NewDelivery("dlv_other_rule", "billing", 0, "email", "k3", T0 + DAY,
                             status=DeliveryStatus.SCHEDULED, cancel_key="user_1")  # fmt: skip
    keyless = NewDelivery("dlv_keyless", "onboarding", 1, "email", "k4", T0 + DAY,
                          status=DeliveryStatus.SCHEDULED)  # fmt: skip
    assert await store.ingest(e, [other_rule, keyless]) is IngestOutcome.ACCEPTED
    step = await cancel(store, 4, "user_1")
    assert step.cancelled == ((mine, "email"),)
    left = {d.id: d.status for d in await store.list_deliveries() if d.id != mine}
    assert left == {i: "scheduled" for i in (other_key, "dlv_other_rule", "dlv_keyless")}


async def test_a_failed_attempt_after_a_cancel_is_recorded_and_never_retried(store: Store) -> None:
    """A delivery a worker holds when the cancel commits is cancelled at once (reported in
    flight); its attempt then fails: the failure is in its history, and it stays cancelled,
    never claimed again."""
    dlv = await created(store, 1, T0, "user_1")
    (claimed,) = await store.claim_due(T0, 10, 60)
    step = await cancel(store, 2, "user_1", at=T0 + 1)
    assert (step.cancelled, step.in_flight) == ((), (dlv,))
    recorded = await store.record_retry(attempt(dlv, T0), T0 + 10, lease=claimed.lease_until)
    assert recorded is Recorded.CANCELLED
    d = await stored(store, dlv)
    assert (d.status, d.attempts, d.lease_until, d.last_error) == (
        "cancelled", 1, None, "cancelled by user.deleted msg_2",
    )  # fmt: skip
    assert [(a.number, a.outcome) for a in await store.list_attempts(dlv)] == [(1, "failed")]
    assert await store.claim_due(T0 + DAY, 10, 60) == []
    dead = await store.record_dead(None, dlv, "late")
    assert (dead, (await stored(store, dlv)).status) == (Recorded.CANCELLED, "cancelled")


async def test_a_delivered_attempt_after_a_cancel_wins_and_says_so(store: Store) -> None:
    """If the attempt in flight when the cancel came delivered, the send won: delivered, and
    the cancel's reason is kept, saying the send had already started."""
    dlv = await created(store, 1, T0, "user_1")
    (claimed,) = await store.claim_due(T0, 10, 60)
    await cancel(store, 2, "user_1", at=T0 + 1)
    ok = attempt(dlv, T0, code=200, error=None)
    assert await store.record_delivered(ok, lease=claimed.lease_until) is Recorded.CANCELLED
    d = await stored(store, dlv)
    assert (d.status, d.last_error) == (
        "delivered", "cancelled by user.deleted msg_2" + SENT_ANYWAY,
    )  # fmt: skip


async def test_claims_and_cancels_racing_in_two_stores_never_both_win(
    make_store: Callable[[], Store],
) -> None:
    """Two replicas: one claims while the other cancels, 40 times over. Each delivery is either
    claimed before the cancel (then reported in flight) or cancelled and never claimed."""
    worker, ingest = make_store(), make_store()
    await worker.open()
    await ingest.open()
    try:
        for n in range(40):
            dlv = await created(ingest, n, T0, f"user_{n}")
            claims, step = await asyncio.gather(
                worker.claim_due(T0, 1, 60), cancel(ingest, 1000 + n, f"user_{n}", at=T0 + 1)
            )
            claimed = [c.id for c in claims]
            assert (claimed == [dlv]) == (step.in_flight == (dlv,))
            assert (claimed == []) == (step.cancelled == ((dlv, "email"),))
            assert (await stored(worker, dlv)).status == "cancelled"
    finally:
        await worker.close()
        await ingest.close()


async def test_cancels_racing_a_worker_process_are_never_sent_after_they_commit(
    make_store: Callable[[], Store], tmp_path: Path
) -> None:
    """A worker in another process claims and fails (or delivers) deliveries as fast as it can
    while this one cancels them one by one. No claim asked for after a cancel committed takes
    its delivery; every failing one ends cancelled, not retried; a delivered one was claimed
    before its cancel."""
    store = make_store()
    await store.open()
    if isinstance(store, SQLiteStore):
        url = f"sqlite:///{store.path}"
    else:
        assert isinstance(store, PostgresStore)
        url = store._url
    n = 60
    ids = [f"dlv_race_{i:02d}" for i in range(n)]
    for i, dlv in enumerate(ids):
        d = NewDelivery(dlv, "onboarding", 0, "email", f"k{i}", T0, cancel_key=f"user_{i}")
        await store.ingest(event(i), [d])
    stop = tmp_path / "stop"
    worker = subprocess.Popen(  # noqa: ASYNC220 (started once; it runs beside the loop)
        [sys.executable, "-m", "tests.store.race_worker", url, str(stop)], cwd=ROOT
    )
    try:
        while len(await store.list_attempts(ids[1])) < 3:  # the worker is at it: start racing
            assert worker.poll() is None
            await asyncio.sleep(0.01)
        committed: dict[str, float] = {}
        for i, dlv in enumerate(ids):
            await asyncio.sleep(0.002)
            e = event(1000 + i, type="user.deleted")
            await store.admit(e, [], [Cancel("onboarding", f"user_{i}", "by the race")])
            committed[dlv] = time.time()
        stop.touch()
        assert worker.wait(60) == 0
        for dlv in ids:
            record = await stored(store, dlv)
            tries = await store.list_attempts(dlv)
            assert all(a.started_at < committed[dlv] for a in tries), (dlv, tries)
            if record.status == "delivered":
                assert dlv[-1] in "02468"
                assert tries[-1].outcome == "delivered"
            else:
                assert record.status == "cancelled", record
                assert record.lease_until is None
        failing = [dlv for dlv in ids if dlv[-1] not in "02468"]
        assert {(await stored(store, i)).status for i in failing} == {"cancelled"}
    finally:
        stop.touch()
        if worker.poll() is None:
            worker.kill()
        await store.close()
