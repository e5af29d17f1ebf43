"""The worker under faults: a store that fails, a sink that keeps failing (its circuit), a rule
from newer rules, attempts that never end or trickle, a stalled attempt past its lease.

Time is driven, never slept: see worker_harness.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from relay.config import Config, load_config
from relay.delivery.worker import Runtime, Worker
from relay.errors import RetryableError, StoreError, StoreUnavailableError
from relay.metrics import WORKER_STAGES, Metrics
from relay.server.lifespan import build_sinks
from relay.sinks.base import Message
from relay.sinks.client import make_http_client
from relay.store import ClaimedDelivery, DeliveryStatus, Recorded, SQLiteStore
from relay.store.results import ResultChange
from tests.delivery.worker_harness import (
    ENV,
    T0,
    BlockingSink,
    Clock,
    Harness,
    ScriptedSink,
    harness_on,
    retryable,
    write_project,
)

pytestmark = pytest.mark.anyio


class FlakyStore(SQLiteStore):
    """A store whose orphan sweep (a claim of the deliveries of unknown sinks or rules) cannot
    commit."""

    async def claim_orphans(
        self, now: float, limit: int, lease_s: float, sinks: Collection[str], rules: Collection[str]
    ) -> list[ClaimedDelivery]:
        raise StoreUnavailableError("claim due deliveries: database is locked")


async def test_store_failure_while_sweeping_orphans_does_not_stop_the_worker(
    tmp_path: Path, config: Config
) -> None:
    """A store that cannot commit during the orphan sweep is logged and counted as a worker
    error of the sweep; tick still delivers."""
    store = FlakyStore(tmp_path / "flaky.db")
    await store.open()
    metrics = Metrics()
    try:
        alpha = ScriptedSink()
        runtime = Runtime(config, {"alpha": alpha, "beta": ScriptedSink()})
        clock = Clock()
        worker = Worker(store, lambda: runtime, clock=clock, metrics=metrics)
        h = Harness(store, config, clock, runtime.sinks, worker, runtime)
        dlv = await h.add("to-alpha", "alpha")
        assert await h.run_due() == 1
        assert (await h.delivery(dlv)).status == "delivered"
    finally:
        await store.close()
    assert worker_errors(metrics) == {"claim": 0, "sweep": 1, "tick": 0, "delivery": 0}


class UnrecordableStore(SQLiteStore):
    """A store that refuses to record any attempt's result."""

    async def _apply(self, change: ResultChange) -> Recorded:
        raise StoreError(f"{change.describe()}: refused")


async def test_a_result_that_cannot_be_recorded_is_a_counted_worker_error(
    tmp_path: Path, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store refuses an attempt's result, the worker logs "delivery crashed", counts
    a worker error of stage delivery, and goes on: the delivery keeps its lease, to be tried
    again when it ends."""
    store = UnrecordableStore(tmp_path / "relay.db")
    await store.open()
    try:
        h = harness_on(store, config)()
        dlv = await h.add("to-alpha", "alpha")
        assert await h.run_due() == 1
        record = await h.delivery(dlv)
    finally:
        await store.close()
    assert worker_errors(h.worker.metrics) == {"claim": 0, "sweep": 0, "tick": 0, "delivery": 1}
    assert "delivery crashed" in caplog.text
    assert (record.status, record.attempts) == ("pending", 0)
    assert record.lease_until is not None


async def test_failing_sink_trips_the_circuit_and_recovers(
    make_harness: Callable[..., Harness],
) -> None:
    """After 5 failures in a row the sink gets no attempts until the cooldown; a probe that
    succeeds closes the circuit and the rest are delivered."""
    failing = ScriptedSink(script=[RetryableError("upstream down", status=503)] * 8)
    h = make_harness(alpha=failing)
    ids = [await h.add("to-alpha", "alpha") for _ in range(8)]
    for _ in range(2):  # concurrency 4: two ticks, 8 failing attempts; the 5th opens it
        await h.run_due()
    assert h.worker.circuit_states()["alpha"].name == "OPEN"
    attempts_when_open = len(failing.messages)
    assert attempts_when_open == 8
    h.clock.now += 29  # cooldown is 30 s: still open, even though retries are due
    assert await h.run_due() == 0
    assert len(failing.messages) == attempts_when_open
    h.clock.now += 1000  # past the cooldown and every retry: exactly one probe
    assert await h.run_due() == 1
    assert h.worker.circuit_states()["alpha"].name == "CLOSED"
    while await h.run_due():
        pass
    statuses = {(await h.delivery(i)).status for i in ids}
    assert statuses == {DeliveryStatus.DELIVERED}


async def test_a_message_a_sink_cannot_encode_is_dead_and_never_trips_the_circuit(
    make_harness: Callable[..., Harness],
) -> None:
    """A sink (a plugin, say) that raises UnicodeEncodeError or RecursionError on a message's
    own content: that delivery is dead at once with the reason, the sink's circuit hears
    nothing of it (8 such in a row, past the threshold of 5) and the next message is delivered."""
    surrogate = UnicodeEncodeError("utf-8", "Ada \ud800", 4, 5, "surrogates not allowed")
    failing = ScriptedSink(script=[surrogate, RecursionError("deep")] * 4)
    h = make_harness(alpha=failing)
    bad = [await h.add("to-alpha", "alpha") for _ in range(8)]
    while await h.run_due():
        pass
    for delivery_id in bad:
        record = await h.delivery(delivery_id)
        assert (record.status, record.attempts) == ("dead", 1)
        assert record.last_error is not None
        assert record.last_error.startswith("permanent error: alpha: the message")
    assert h.worker.circuit_states()["alpha"].name == "CLOSED"
    good = await h.add("to-alpha", "alpha")
    assert await h.run_due() == 1
    assert (await h.delivery(good)).status == "delivered"


async def test_delivery_of_a_rule_from_newer_rules_is_left_to_a_replica_that_has_it(
    make_harness: Callable[..., Harness],
) -> None:
    """Rolling deploy: a delivery for a rule this replica does not know, of an event that came
    after its config was loaded, is deferred (no attempt) — and dead only after the grace."""
    from relay.delivery.worker import UNKNOWN_GRACE_S, UNKNOWN_RETRY_S

    alpha = ScriptedSink()
    h = make_harness(alpha=alpha)
    h.clock.now += 5  # the event arrives after this replica loaded its rules
    dlv = await h.add("brand-new-rule", "alpha")

    assert await h.run_due() == 1
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("pending", 0)
    assert record.next_attempt_at == h.clock.now + UNKNOWN_RETRY_S
    assert await h.run_due() == 0  # not due again before the retry interval
    h.clock.now += UNKNOWN_GRACE_S
    await h.run_due()
    record = await h.delivery(dlv)
    assert record.status == "dead"
    assert alpha.messages == []


GAMMA_DEADLINE = (
    "gamma: the attempt did not finish within 0.4 s"
    " (timeout_s 0.2 s bounds each wait, this deadline the whole attempt)"
)


async def test_an_attempt_that_never_completes_ends_at_its_deadline(
    make_harness: Callable[..., Harness],
) -> None:
    """``timeout_s`` bounds each wait, not the attempt: a send that never completes is cut at
    timeout_s + min(timeout_s, lease margin / 2) (0.4 s for gamma's 0.2) as a retryable failure,
    well inside the lease, so no second claim can send the delivery while it is still going."""
    gamma = BlockingSink()  # never released
    h = make_harness(gamma=gamma)
    dlv = await h.add("to-gamma", "gamma", type="session.created")

    with anyio.fail_after(5):
        assert await h.run_due() == 1
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.last_error == GAMMA_DEADLINE
    assert gamma.in_flight == 0  # the send was cancelled, not left running
    assert h.worker.attempt_deadline_s(300) < 300 + h.worker.lease_margin_s

    gamma.release.set()
    h.clock.now = record.next_attempt_at
    assert await h.run_due() == 1
    assert (await h.delivery(dlv)).status == "delivered"


async def test_a_receiver_trickling_its_answer_cannot_hold_an_attempt(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """Real HTTP: a receiver that sends its headers, then one byte every 50 ms (each read well
    within the http sink's 0.2 s timeout) would hold the attempt for ever; the worker ends it
    at its deadline, closes the connection, and records a retryable failure."""
    closed = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            closed.set()
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    root = tmp_path / "trickle"
    rules, templates = write_project(root)
    rules.write_text(rules.read_text().replace("127.0.0.1:9/gamma", f"127.0.0.1:{port}/gamma"))
    config = load_config(rules, templates, env=ENV)
    async with server, make_http_client() as http:
        runtime = Runtime(config, build_sinks(config, http, dry_run=False), loaded_at=T0)
        clock = Clock()
        worker = Worker(store, lambda: runtime, clock=clock)
        h = Harness(store, config, clock, runtime.sinks, worker, runtime)
        dlv = await h.add("to-gamma", "gamma", type="session.created")
        with anyio.fail_after(5):
            assert await h.run_due() == 1
            await closed.wait()  # the receiver sees its connection go
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.last_error == GAMMA_DEADLINE
    (attempt,) = await h.attempts(dlv)
    assert 400 <= attempt.duration_ms < 5000


@dataclass
class GatedSink:
    """Each send waits for ``gate``, then raises ``outcome`` (None: success)."""

    outcome: BaseException | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: Message) -> None:
        self.started.set()
        await self.gate.wait()
        if self.outcome is not None:
            raise self.outcome


async def test_a_stalled_attempt_cannot_undo_a_delivery_made_after_its_lease(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose attempt outlives its lease (its process stalled, say): once the lease has
    passed another worker claims the delivery and delivers it; the stalled attempt's late
    failure is kept in the history and logged, and does not turn the delivery into a retry."""
    stalled = GatedSink(retryable())
    h = make_harness(alpha=stalled)
    dlv = await h.add("to-alpha", "alpha")
    assert await h.worker.tick() == 1  # claimed with a lease until T0 + 10 + 60
    await stalled.started.wait()

    h.clock.now = T0 + 71  # the lease has passed: another worker claims and delivers
    other = Runtime(h.config, {**h.sinks, "alpha": ScriptedSink()}, loaded_at=T0)
    second = Worker(h.store, lambda: other, clock=h.clock)
    assert await second.tick() == 1
    await second.drain()
    assert (await h.delivery(dlv)).status == "delivered"

    stalled.gate.set()  # the stalled attempt ends, with a retryable failure
    await h.worker.drain()
    record = await h.delivery(dlv)
    assert (record.status, record.attempts, record.last_error) == ("delivered", 1, None)
    assert [(a.number, a.outcome) for a in await h.attempts(dlv)] == [
        (1, "delivered"),
        (2, "failed"),
    ]
    (lost,) = [r for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "lease_lost"]
    assert lost.fields["delivery_id"] == dlv  # type: ignore[attr-defined]
    assert lost.fields["result"] == "retry"  # type: ignore[attr-defined]


def worker_errors(metrics: Metrics) -> dict[str, float]:
    """``relay_worker_errors_total`` by stage."""
    return {
        stage: metrics.registry.get_sample_value("relay_worker_errors_total", {"stage": stage})
        or 0.0
        for stage in WORKER_STAGES
    }
