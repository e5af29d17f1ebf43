"""The worker, in process: what becomes of a delivery for each outcome of its sink, per-sink
concurrency and pacing, removed sinks and rules, and the error texts it records.

Time is driven, never slept: see worker_harness.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from relay.config import Config
from relay.errors import PermanentError, RetryableError
from relay.ids import idempotency_key
from relay.store import DeliveryStatus, SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.delivery.worker_harness import (
    ALPHA_TOKEN,
    SIGNING_SECRET,
    T0,
    BlockingSink,
    Harness,
    ScriptedSink,
    harness_on,
    retryable,
)

pytestmark = pytest.mark.anyio


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
    limited: list[BaseException | None] = [
        RetryableError("429 slow down", status=429, retry_after_s=30)
    ]
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
