"""The worker, in process: a real SQLite store, a fake clock and scripted in-memory sinks.

Time is driven, never slept: ``worker.tick()`` claims what is due at the fake clock's now,
``worker.drain()`` waits for the attempts it started, and moving the clock makes retries due.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from relay.config import Config, load_config
from relay.delivery.worker import Runtime, Worker
from relay.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    StoreError,
    StoreUnavailableError,
)
from relay.ids import idempotency_key
from relay.lifespan import build_sinks
from relay.metrics import WORKER_STAGES, Metrics
from relay.sinks.base import Message, Sink
from relay.sinks.client import make_http_client
from relay.store import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryRecord,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    SQLiteStore,
    Store,
)
from relay.store.postgres import PostgresStore
from relay.store.results import ResultChange

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALPHA_TOKEN = "Bearer tok_live_9f8e7d6c5b4a"
ENV = {"CLERK_WEBHOOK_SIGNING_SECRET": SIGNING_SECRET, "ALPHA_TOKEN": ALPHA_TOKEN}

RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  alpha:
    type: http
    url: http://127.0.0.1:9/alpha
    headers:
      Authorization: ${ALPHA_TOKEN}
    retry: {max_attempts: 3, first_backoff_s: 10, max_backoff_s: 100}
  beta:
    type: http
    url: http://127.0.0.1:9/beta
    concurrency: 2
  gamma:
    type: http
    url: http://127.0.0.1:9/gamma
    timeout_s: 0.2
  delta:
    type: http
    url: http://127.0.0.1:9/delta
    rate_limit_per_s: 2
rules:
  - name: to-alpha
    events: user.created
    send:
      - sink: alpha
        template: body.yaml
  - name: to-beta
    events: user.created
    send:
      - sink: beta
  - name: to-gamma
    events: session.created
    send:
      - sink: gamma
  - name: to-delta
    events: organization.created
    send:
      - sink: delta
  - name: nickname
    events: user.updated
    send:
      - sink: alpha
        template: nickname.yaml
"""
TEMPLATES = {
    "body.yaml": 'body:\n  user: "{{ data.id }}"\n',
    "nickname.yaml": 'body:\n  nickname: "{{ data.nickname }}"\n',  # no such field: fails
}


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedSink:
    """Raises the scripted outcomes in turn (None = success); succeeds once the script is out."""

    script: list[BaseException | None] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


@dataclass
class BlockingSink:
    """Every send waits for ``release``; counts how many are in flight at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    sent: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.sent.append(message)


@dataclass
class Harness:
    store: Store
    config: Config
    clock: Clock
    sinks: dict[str, Sink]
    worker: Worker
    runtime: Runtime
    events: int = 0

    async def add(
        self,
        rule: str,
        sink: str,
        *,
        type: str = "user.created",
        data: Mapping[str, object] | None = None,
        send_index: int = 0,
    ) -> str:
        """Store one event with one delivery due now; returns the delivery id."""
        self.events += 1
        n = self.events
        message_id = f"msg_{n}"
        body = {"type": type, "object": "event", "data": data or {"id": f"user_{n}"}}
        event = NewEvent(
            f"evt_{n}", "clerk", message_id, type, self.clock(), json.dumps(body).encode()
        )
        delivery = NewDelivery(
            id=f"dlv_{n}",
            rule=rule,
            send_index=send_index,
            sink=sink,
            idempotency_key=idempotency_key("clerk", message_id, rule, send_index),
            next_attempt_at=self.clock(),
        )
        await self.store.ingest(event, [delivery])
        return delivery.id

    async def run_due(self) -> int:
        """Claim what is due now and wait for every attempt started; returns how many claimed."""
        claimed = await self.worker.tick()
        await self.worker.drain()
        return claimed

    async def delivery(self, delivery_id: str) -> DeliveryRecord:
        (found,) = [d for d in await self.store.list_deliveries() if d.id == delivery_id]
        return found

    async def attempts(self, delivery_id: str) -> list[AttemptRecord]:
        return await self.store.list_attempts(delivery_id)


def write_project(root: Path) -> tuple[Path, Path]:
    templates = root / "templates"
    templates.mkdir(parents=True)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    rules = root / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES), encoding="utf-8")
    return rules, templates


@pytest.fixture
def config(tmp_path: Path) -> Config:
    rules, templates = write_project(tmp_path / "project")
    return load_config(rules, templates, env=ENV)


def harness_on(store: Store, config: Config) -> Callable[..., Harness]:
    """A factory of harnesses on ``store``: each names the sinks it scripts (the others
    succeed)."""

    def make(
        *,
        alpha: Sink | None = None,
        beta: Sink | None = None,
        gamma: Sink | None = None,
        delta: Sink | None = None,
    ) -> Harness:
        sinks: dict[str, Sink] = {
            "alpha": alpha or ScriptedSink(),
            "beta": beta or ScriptedSink(),
            "gamma": gamma or ScriptedSink(),
            "delta": delta or ScriptedSink(),
        }
        runtime = Runtime(config, sinks, loaded_at=T0)
        clock = Clock()
        worker = Worker(store, lambda: runtime, clock=clock)
        return Harness(store, config, clock, sinks, worker, runtime)

    return make


@pytest.fixture
def make_harness(store: SQLiteStore, config: Config) -> Callable[..., Harness]:
    return harness_on(store, config)


def retryable(text: str = "post to alpha: 503 Service Unavailable", **kw: float) -> DeliveryError:
    return RetryableError(text, status=503, **kw)


async def test_delivered_on_first_try(make_harness: Callable[..., Harness]) -> None:
    """A due delivery is rendered, sent once with its idempotency key and recorded delivered."""
    alpha = ScriptedSink()
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    assert await h.run_due() == 1

    (message,) = alpha.messages
    assert message.payload == {"body": {"user": "user_1"}}
    assert message.idempotency_key == idempotency_key("clerk", "msg_1", "to-alpha", 0)
    assert (message.delivery_id, message.event_id, message.event_type) == (
        dlv,
        "msg_1",
        "user.created",
    )
    assert (message.rule, message.sink, message.event["type"]) == (
        "to-alpha",
        "alpha",
        "user.created",
    )
    record = await h.delivery(dlv)
    assert (record.status, record.attempts, record.last_error) == ("delivered", 1, None)
    (attempt,) = await h.attempts(dlv)
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("delivered", 200, None)
    assert await h.run_due() == 0


async def test_retryable_error_is_retried_when_due_then_delivered(
    make_harness: Callable[..., Harness],
) -> None:
    """A retryable failure schedules the next attempt by the backoff; not claimed before, then
    claimed and delivered with the same idempotency key."""
    alpha = ScriptedSink([retryable()])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    await h.run_due()
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.last_error == "post to alpha: 503 Service Unavailable"
    assert T0 + 8 <= record.next_attempt_at <= T0 + 12  # first_backoff_s 10, +-20 % jitter

    h.clock.now = record.next_attempt_at - 0.001
    assert await h.run_due() == 0
    h.clock.now = record.next_attempt_at
    assert await h.run_due() == 1

    record = await h.delivery(dlv)
    assert (record.status, record.attempts, record.last_error) == ("delivered", 2, None)
    attempts = await h.attempts(dlv)
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, "failed", 503),
        (2, "delivered", 200),
    ]
    assert len({m.idempotency_key for m in alpha.messages}) == 1
    assert len(alpha.messages) == 2


async def test_retry_after_is_respected(make_harness: Callable[..., Harness]) -> None:
    """A Retry-After longer than the backoff is the delay: not claimed before now + retry_after."""
    alpha = ScriptedSink([retryable("post to alpha: 429 Too Many Requests", retry_after_s=30)])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    await h.run_due()
    assert (await h.delivery(dlv)).next_attempt_at == T0 + 30
    h.clock.now = T0 + 29.999
    assert await h.run_due() == 0
    h.clock.now = T0 + 30
    assert await h.run_due() == 1
    assert (await h.delivery(dlv)).status == "delivered"


async def test_permanent_error_is_dead_after_one_attempt(
    make_harness: Callable[..., Harness],
) -> None:
    """A permanent error makes the delivery dead at once, with the reason and one attempt."""
    alpha = ScriptedSink([PermanentError("post to alpha: 422 Unprocessable Entity", status=422)])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    await h.run_due()
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("dead", 1)
    assert record.last_error == "permanent error: post to alpha: 422 Unprocessable Entity"
    (attempt,) = await h.attempts(dlv)
    assert (attempt.outcome, attempt.status_code) == ("dead", 422)
    h.clock.now += 10 * 24 * 3600
    assert await h.run_due() == 0
    assert len(alpha.messages) == 1


async def test_attempts_exhausted_is_dead(make_harness: Callable[..., Harness]) -> None:
    """After max_attempts (3 for alpha) retryable failures the delivery is dead, saying so."""
    alpha = ScriptedSink([retryable() for _ in range(5)])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    for _ in range(3):
        assert await h.run_due() == 1
        h.clock.now += 1000  # past any backoff (max_backoff_s 100)
    assert await h.run_due() == 0

    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("dead", 3)
    assert record.last_error == "gave up after 3 attempts: post to alpha: 503 Service Unavailable"
    outcomes = [a.outcome for a in await h.attempts(dlv)]
    assert outcomes == [DeliveryStatus.FAILED, DeliveryStatus.FAILED, DeliveryStatus.DEAD]
    assert len(alpha.messages) == 3


async def test_template_error_at_send_time_is_dead_and_worker_goes_on(
    make_harness: Callable[..., Harness],
) -> None:
    """A template that fails to render for this event makes that delivery dead (nothing sent);
    the other deliveries in the same batch are still delivered."""
    alpha = ScriptedSink()
    h = make_harness(alpha=alpha)
    broken = await h.add("nickname", "alpha", type="user.updated")
    fine = await h.add("to-alpha", "alpha")

    assert await h.run_due() == 2

    record = await h.delivery(broken)
    assert (record.status, record.attempts) == ("dead", 1)
    assert record.last_error is not None
    assert record.last_error.startswith("template: ")
    assert "nickname" in record.last_error
    (attempt,) = await h.attempts(broken)
    assert (attempt.outcome, attempt.status_code, attempt.error) == (
        "dead",
        None,
        record.last_error,
    )
    assert (await h.delivery(fine)).status == "delivered"
    assert [m.delivery_id for m in alpha.messages] == [fine]


async def test_unexpected_sink_exception_is_a_retry(make_harness: Callable[..., Harness]) -> None:
    """A sink that raises something outside the error tree (a bug) costs one retryable attempt;
    the worker does not crash and the next attempt delivers."""
    alpha = ScriptedSink([KeyError("recipient")])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    await h.run_due()
    record = await h.delivery(dlv)
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.last_error == "alpha: unexpected KeyError: 'recipient'"

    h.clock.now = record.next_attempt_at
    assert await h.run_due() == 1
    assert (await h.delivery(dlv)).status == "delivered"


async def test_per_sink_concurrency_without_head_of_line_blocking(
    make_harness: Callable[..., Harness],
) -> None:
    """A blocked sink with concurrency 2 has at most 2 sends in flight, and another sink's
    deliveries complete meanwhile."""
    beta = BlockingSink()
    alpha = ScriptedSink()
    h = make_harness(alpha=alpha, beta=beta)
    slow = [await h.add("to-beta", "beta") for _ in range(5)]
    fast = [await h.add("to-alpha", "alpha") for _ in range(3)]

    assert await h.worker.tick() == 5  # 2 for beta (its concurrency), 3 for alpha
    with anyio.fail_after(5):  # the store records on its own thread: poll it, bounded
        while {(await h.delivery(d)).status for d in fast} != {"delivered"}:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert (beta.in_flight, beta.max_in_flight) == (2, 2)
    assert await h.worker.tick() == 0  # beta has no free slot, alpha nothing due
    assert [(await h.delivery(d)).status for d in slow] == ["pending"] * 5

    beta.release.set()
    await h.worker.drain()
    while await h.run_due():
        pass
    assert [(await h.delivery(d)).status for d in slow] == ["delivered"] * 5
    assert beta.max_in_flight == 2
    assert sorted(m.delivery_id for m in beta.sent) == sorted(slow)


async def test_a_sink_with_a_rate_limit_starts_no_more_attempts_than_it_allows(
    make_harness: Callable[..., Harness],
) -> None:
    """rate_limit_per_s 2 (concurrency 4): a backlog of 7 starts 2 at once (a second's worth),
    then one every half second, and two again after a long quiet spell, never more."""
    delta = ScriptedSink()
    h = make_harness(delta=delta)
    ids = [await h.add("to-delta", "delta", type="organization.created") for _ in range(7)]
    started = [await h.run_due(), await h.run_due()]
    h.clock.now += 0.5
    started.append(await h.run_due())
    h.clock.now += 0.25
    started.append(await h.run_due())
    h.clock.now += 0.25
    started.append(await h.run_due())
    h.clock.now += 60
    started += [await h.run_due(), await h.run_due()]
    assert started == [2, 0, 1, 0, 1, 2, 0]
    h.clock.now += 0.5
    assert await h.run_due() == 1
    assert len(delta.messages) == 7
    assert {(await h.delivery(d)).status for d in ids} == {"delivered"}


async def test_a_429_with_retry_after_pauses_the_whole_sink_without_tripping_its_circuit(
    make_harness: Callable[..., Harness],
) -> None:
    """A 429 with Retry-After: 30 holds back every delivery of that sink, not only the one that
    got it, for 30 s; then they all go. Such 429s are the upstream pacing the sink, so six in a
    row do not open its circuit (five failures would)."""
    limited = [RetryableError("429 slow down", status=429, retry_after_s=30)]
    alpha = ScriptedSink(limited * 6)
    h = make_harness(alpha=alpha)
    first = await h.add("to-alpha", "alpha")
    assert await h.run_due() == 1  # answered 429: the sink is paused for 30 s
    later = [await h.add("to-alpha", "alpha") for _ in range(2)]
    assert await h.run_due() == 0
    h.clock.now += 29.9
    assert await h.run_due() == 0
    h.clock.now += 0.1
    assert await h.run_due() == 3  # the two held back and the first's retry: three 429s
    assert len(alpha.messages) == 4
    h.clock.now += 30
    assert await h.run_due() == 3  # two more 429s (six in a row), then a success
    assert len(alpha.messages) == 7
    assert h.worker.circuit_states()["alpha"].name == "CLOSED"
    statuses = sorted([(await h.delivery(d)).status for d in [first, *later]])
    assert statuses in (["delivered", "failed", "failed"], ["dead", "delivered", "failed"])


async def test_delivery_to_removed_sink_is_dead_with_reason(
    make_harness: Callable[..., Harness],
) -> None:
    """A delivery whose sink is no longer in the config (an orphan) becomes dead, saying why."""
    h = make_harness()
    orphan = await h.add("old-rule", "gone")
    h.runtime.loaded_at = h.clock.now + 1  # the config without it was loaded after the event

    assert await h.run_due() == 1
    record = await h.delivery(orphan)
    assert (record.status, record.attempts) == ("dead", 0)
    assert record.last_error == "sink 'gone' is no longer configured in rules.yaml"
    assert await h.attempts(orphan) == []


async def test_delivery_of_removed_rule_is_dead_with_reason(
    make_harness: Callable[..., Harness],
) -> None:
    """A delivery whose rule was removed from the config becomes dead, saying why."""
    alpha = ScriptedSink()
    h = make_harness(alpha=alpha)
    dlv = await h.add("old-rule", "alpha")
    h.runtime.loaded_at = h.clock.now + 1  # the config without it was loaded after the event

    await h.run_due()
    record = await h.delivery(dlv)
    assert record.status == "dead"
    assert record.last_error == "rule 'old-rule' (send 0) is no longer configured in rules.yaml"
    assert alpha.messages == []


async def test_error_texts_are_redacted(make_harness: Callable[..., Harness]) -> None:
    """A configured secret in a sink's error text never reaches the stored attempt or reason."""
    echo = f"post to alpha: 401 Unauthorized: bad credentials {ALPHA_TOKEN} and {SIGNING_SECRET}"
    alpha = ScriptedSink([retryable(echo), PermanentError(echo, status=401)])
    h = make_harness(alpha=alpha)
    dlv = await h.add("to-alpha", "alpha")

    await h.run_due()
    h.clock.now += 1000
    await h.run_due()

    record = await h.delivery(dlv)
    attempts = await h.attempts(dlv)
    stored = [record.last_error or "", *(a.error or "" for a in attempts)]
    assert len(stored) == 3
    for text in stored:
        assert ALPHA_TOKEN not in text
        assert "tok_live_9f8e7d6c5b4a" not in text
        assert SIGNING_SECRET not in text
        assert "bad credentials [redacted] and [redacted]" in text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_error_text_holding_nul_is_recorded(
    backend: str, config: Config, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An error text may hold a NUL (which PostgreSQL's text cannot) or a lone surrogate
    (which neither store can encode): the attempt is recorded with them shown as \\x00 and
    \\udcff, on both stores alike, so the delivery is retried on schedule instead of its record
    failing and the send repeating every lease."""
    store: Store = (
        SQLiteStore(tmp_path / "relay.db")
        if backend == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres_url"))
    )
    await store.open()
    try:
        sink = ScriptedSink([retryable("post: 500: bad\x00body \udcff")])
        h = harness_on(store, config)(alpha=sink)
        dlv = await h.add("to-alpha", "alpha")
        assert await h.run_due() == 1
        record = await h.delivery(dlv)
        (attempt,) = await h.attempts(dlv)
    finally:
        await store.close()
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.last_error == attempt.error == "post: 500: bad\\x00body \\udcff"


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

    async def _apply(self, change: ResultChange) -> bool:
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
