"""Workflows through the worker, on SQLite and PostgreSQL, with a fake clock (see
workflow_harness.py): delays, send windows across the clocks' changes, cancels before and after
due and while in flight, digests by window and by max, first: now, once and throttle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.errors import RetryableError
from relay.store import Store
from tests.delivery.workflow_harness import DAY, RULES, Flow, load, utc

pytestmark = pytest.mark.anyio

# Friday 27 March 2026, 16:30 UTC (17:30 in Berlin); the clocks go forward on Sunday the 29th.
SPRING = utc("2026-03-27 16:30")
# Friday 23 October 2026, 16:30 UTC (18:30 in Berlin); the clocks go back on Sunday the 25th.
AUTUMN = utc("2026-10-23 16:30")


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_store


@pytest.fixture
def flow(store: Store, tmp_path: Path) -> Flow:
    return Flow(store, load(tmp_path / "project"))


def user(n: int, timezone: str | None = None) -> dict[str, object]:
    metadata = {} if timezone is None else {"timezone": timezone}
    return {"id": f"user_{n}", "public_metadata": metadata}


async def test_a_delayed_send_goes_out_when_due_and_not_before(flow: Flow) -> None:
    """The welcome goes out at once; the tips, 3 days later in the send window, are scheduled
    for then and sent exactly then, once."""
    flow.at(SPRING - 5 * 3600)  # Friday 12:30 Berlin: inside the window
    event_id, _ = await flow.post("user.created", user(1))
    await flow.run_due()
    assert flow.sent() == [{"welcome": "user_1"}]
    welcome, tips = await flow.deliveries(event_id, "onboarding")
    due = SPRING - 5 * 3600 + 3 * DAY  # Monday 13:30 Berlin (summer time by then)
    assert (welcome.status, tips.status, tips.next_attempt_at) == ("delivered", "scheduled", due)
    flow.at(due - 1)
    await flow.run_due()  # the sign-up digest goes out; the tips wait
    assert flow.sent() == [{"welcome": "user_1"}]
    flow.at(due)
    assert await flow.run_due() == 1
    assert flow.sent() == [{"welcome": "user_1"}, {"tips": "user_1"}]
    flow.at(due + DAY)
    assert await flow.run_due() == 0


async def test_an_event_nested_past_the_recursion_limit_goes_through_window_and_digest(
    flow: Flow,
) -> None:
    """A sign-up whose metadata is nested 100,000 deep (users write their own metadata): the
    windowed tips and the digest read its body at any depth and are sent, not crashed."""
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    flow.at(SPRING - 5 * 3600)  # Friday 12:30 Berlin: inside the window
    await flow.post("user.created", {"id": "user_1", "public_metadata": deep})
    await flow.run_due()
    flow.at(SPRING - 5 * 3600 + 600)
    await flow.run_due()
    assert flow.sent("slack") == [{"count": 1, "ids": ["user_1"]}]
    flow.at(SPRING - 5 * 3600 + 3 * DAY)
    await flow.run_due()
    assert flow.sent() == [{"welcome": "user_1"}, {"tips": "user_1"}]


@pytest.mark.parametrize(
    ("received", "opening"),
    [
        (SPRING, utc("2026-03-31 07:00")),  # Tue 09:00 CEST, summer time: UTC+2
        (AUTUMN, utc("2026-10-27 08:00")),  # Tue 09:00 CET, winter time: UTC+1
    ],
    ids=["clocks-forward", "clocks-back"],
)
async def test_the_window_opens_at_9_local_across_a_change_of_the_clocks(
    flow: Flow, received: float, opening: float
) -> None:
    """Received on a Friday evening: 3 days later is Monday evening, after 17:00 in Berlin, so
    the tips go out at Tuesday 09:00 Berlin time, whichever side of a clock change that is."""
    flow.at(received)
    event_id, _ = await flow.post("user.created", user(1))
    _, tips = await flow.deliveries(event_id, "onboarding")
    assert tips.next_attempt_at == opening
    flow.at(opening - 1)
    await flow.run_due()
    assert {"tips": "user_1"} not in flow.sent()
    flow.at(opening)
    await flow.run_due()
    assert flow.sent()[-1] == {"tips": "user_1"}


async def test_the_window_follows_the_event_time_zone_or_falls_back(flow: Flow) -> None:
    """The window's time zone comes from the event; a missing or invalid one is the default
    (Europe/Berlin)."""
    flow.at(SPRING)
    first, _ = await flow.post("user.created", user(1, "America/New_York"))
    second, _ = await flow.post("user.created", user(2, "Mars/Olympus_Mons"))
    third, _ = await flow.post("user.created", user(3, "../../etc/passwd"))
    # Monday 30 March 16:30 UTC is 12:30 in New York: inside its window.
    assert (await flow.deliveries(first, "onboarding"))[1].next_attempt_at == SPRING + 3 * DAY
    for fallback in (second, third):
        tips = (await flow.deliveries(fallback, "onboarding"))[1]
        assert tips.next_attempt_at == utc("2026-03-31 07:00")


async def test_a_retry_due_outside_the_window_waits_for_the_next_opening(flow: Flow) -> None:
    """The tips fail at 16:59:50 Berlin; the retry falls due after 17:00, outside the window:
    it is moved, as scheduled and with no attempt, to 09:00 the next weekday, and sent then."""
    flow.at(utc("2026-03-27 15:59:50") - 3 * DAY)  # Tuesday, in winter time (UTC+1)
    event_id, _ = await flow.post("user.created", user(1))
    await flow.run_due()  # the welcome
    flow.email.script = [RetryableError("email: 503", status=503, retry_after_s=20)]
    flow.at(utc("2026-03-27 15:59:50"))  # Friday 16:59:50 Berlin
    await flow.run_due()
    _, tips = await flow.deliveries(event_id, "onboarding")
    assert (tips.status, tips.attempts) == ("failed", 1)
    flow.at(tips.next_attempt_at)  # 17:00:10 Berlin
    await flow.run_due()
    _, tips = await flow.deliveries(event_id, "onboarding")
    monday = utc("2026-03-30 07:00")  # 09:00 Berlin, summer time since Sunday
    assert (tips.status, tips.next_attempt_at, tips.attempts) == ("scheduled", monday, 1)
    flow.at(monday)
    await flow.run_due()
    _, tips = await flow.deliveries(event_id, "onboarding")
    assert (tips.status, tips.attempts) == ("delivered", 2)


async def test_a_reload_that_changes_the_window_applies_when_a_send_comes_due(
    flow: Flow, tmp_path: Path
) -> None:
    """Scheduled deliveries keep the due time computed at ingest; when one comes due, the
    window the rules say then decides: a reload moved it to 15:00-16:00, so the tips due at
    13:30 wait for 15:00."""
    flow.at(SPRING - 5 * 3600)  # Friday 12:30 Berlin
    event_id, _ = await flow.post("user.created", user(1))
    _, tips = await flow.deliveries(event_id, "onboarding")
    assert tips.next_attempt_at == utc("2026-03-30 11:30")  # Monday 13:30 Berlin
    later = RULES.replace('hours: "09:00-17:00"', 'hours: "15:00-16:00"')
    flow.reload(load(tmp_path / "reloaded", later))
    flow.at(tips.next_attempt_at)
    await flow.run_due()
    _, tips = await flow.deliveries(event_id, "onboarding")
    assert (tips.status, tips.next_attempt_at) == ("scheduled", utc("2026-03-30 13:00"))
    assert {"tips": "user_1"} not in flow.sent()
    flow.at(utc("2026-03-30 13:00"))
    await flow.run_due()
    assert flow.sent()[-1] == {"tips": "user_1"}


async def test_a_delete_before_day_3_cancels_the_tips_and_nothing_is_sent(flow: Flow) -> None:
    """user.deleted a day after sign-up: the tips are cancelled in the same commit, with the
    reason; nothing is sent when they would have been due."""
    flow.at(SPRING)
    event_id, _ = await flow.post("user.created", user(1))
    await flow.run_due()
    flow.at(SPRING + DAY)
    _, result = await flow.post("user.deleted", {"id": "user_1", "deleted": True})
    (step,) = result.steps
    welcome, tips = await flow.deliveries(event_id, "onboarding")
    assert step.cancelled == ((tips.id, "email"),)
    assert (welcome.status, tips.status) == ("delivered", "cancelled")
    assert tips.last_error is not None
    assert tips.last_error.startswith("cancelled by user.deleted")
    flow.at(SPRING + 10 * DAY)
    await flow.run_due()  # the sign-up digest goes out
    assert flow.sent() == [{"welcome": "user_1"}]


async def test_a_delete_after_due_cancels_what_waits_for_a_worker_or_a_retry(flow: Flow) -> None:
    """Due but not yet sent (the worker had not got to it), or failed and waiting for its
    retry: a cancel catches both."""
    flow.at(SPRING - 5 * 3600)
    first, _ = await flow.post("user.created", user(1))
    second, _ = await flow.post("user.created", user(2))
    flow.email.script = [RetryableError("email: 503", status=503)] * 2  # both welcomes fail
    await flow.run_due()
    flow.at(flow.clock() + 1)  # before the retries are due
    await flow.post("user.deleted", {"id": "user_1"})
    await flow.post("user.deleted", {"id": "user_2"})
    flow.at(SPRING + 10 * DAY)
    await flow.run_due()
    for event_id in (first, second):
        assert {d.status for d in await flow.deliveries(event_id, "onboarding")} == {"cancelled"}
    assert len(flow.email.messages) == 2  # the two failed attempts, never retried


class HeldSink:
    """A send that waits until told how it ends: None delivered, or an exception."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.outcome: asyncio.Future[BaseException | None] = asyncio.Future()
        self.messages: list[object] = []

    async def send(self, message: object) -> None:
        self.messages.append(message)
        self.started.set()
        failure = await self.outcome
        if failure is not None:
            raise failure


@pytest.mark.parametrize("ends", ["fails", "delivers"])
async def test_a_cancel_while_the_send_is_in_flight(flow: Flow, ends: str) -> None:
    """The welcome is being sent when user.deleted arrives: the send finishes. If it fails, the
    cancel wins: cancelled, the failure in its history, never retried. If it delivers, the
    send won: delivered, and last_error says the cancel came while it was being sent."""
    held = HeldSink()
    flow.runtime.sinks["email"] = held
    flow.at(SPRING - 5 * 3600)
    event_id, _ = await flow.post("user.created", user(1))
    tick = asyncio.create_task(flow.run_due())
    await held.started.wait()
    _, result = await flow.post("user.deleted", {"id": "user_1"})
    welcome, tips = await flow.deliveries(event_id, "onboarding")
    assert result.steps[0].in_flight == (welcome.id,)
    assert result.steps[0].cancelled == ((tips.id, "email"),)
    held.outcome.set_result(None if ends == "delivers" else RetryableError("503", status=503))
    await tick
    welcome, _ = await flow.deliveries(event_id, "onboarding")
    counted = flow.worker.metrics.registry.get_sample_value(
        "relay_deliveries_total", {"sink": "email", "rule": "onboarding", "outcome": "cancelled"}
    )
    assert counted == (1.0 if ends == "fails" else None)
    if ends == "fails":
        assert (welcome.status, welcome.attempts) == ("cancelled", 1)
    else:
        assert welcome.status == "delivered"
        assert "the send went out" in (welcome.last_error or "")
    flow.at(SPRING + 30 * DAY)
    await flow.run_due()  # the sign-up digest goes out
    assert len(held.messages) == 1


async def test_a_digest_goes_out_when_its_window_ends_with_every_event(flow: Flow) -> None:
    """Two sign-ups in ten minutes: one Slack digest at the end of the window, holding both."""
    flow.at(SPRING)
    await flow.post("user.created", user(1))
    flow.at(SPRING + 60)
    await flow.post("user.created", user(2))
    flow.at(SPRING + 599)
    await flow.run_due()
    assert flow.sent("slack") == []
    flow.at(SPRING + 600)
    await flow.run_due()
    assert flow.sent("slack") == [{"count": 2, "ids": ["user_1", "user_2"]}]


async def test_a_digest_goes_out_at_once_when_it_reaches_max(flow: Flow) -> None:
    """max 3: the third sign-up fills the digest, which goes out at once; the fourth starts
    the next one."""
    flow.at(SPRING)
    for n in (1, 2, 3, 4):
        await flow.post("user.created", user(n))
    await flow.run_due()
    assert flow.sent("slack") == [{"count": 3, "ids": ["user_1", "user_2", "user_3"]}]
    flow.at(SPRING + 600)
    await flow.run_due()
    assert flow.sent("slack")[1:] == [{"count": 1, "ids": ["user_4"]}]


async def test_first_now_sends_the_first_at_once_and_digests_the_rest(flow: Flow) -> None:
    """first: now: the first session of a quiet spell is sent at once (a digest of one); the
    ones after it in the window go out together when it ends; per key."""
    flow.at(SPRING)
    await flow.post("session.created", {"id": "sess_1", "user_id": "user_1"})
    await flow.run_due()
    assert flow.sent("slack") == [{"count": 1, "ids": ["sess_1"]}]
    flow.at(SPRING + 10)
    await flow.post("session.created", {"id": "sess_2", "user_id": "user_1"})
    await flow.post("session.created", {"id": "sess_3", "user_id": "user_1"})
    await flow.post("session.created", {"id": "sess_4", "user_id": "user_2"})  # another key
    await flow.run_due()
    assert flow.sent("slack")[1:] == [{"count": 1, "ids": ["sess_4"]}]
    flow.at(SPRING + 600)
    await flow.run_due()
    assert flow.sent("slack")[2:] == [{"count": 2, "ids": ["sess_2", "sess_3"]}]


async def test_once_never_sends_the_rule_twice_for_a_key(flow: Flow) -> None:
    """once: the second event for the same address is suppressed with its reason, and never
    sent, whenever the worker runs."""
    flow.at(SPRING)
    _first, _ = await flow.post("user.updated", {"id": "user_1", "email": "ada@example.com"})
    second, _ = await flow.post("user.updated", {"id": "user_1", "email": "ada@example.com"})
    flow.at(SPRING + 400 * DAY)
    await flow.run_due()
    assert flow.sent() == [{"welcome": "user_1"}]
    (held,) = await flow.deliveries(second)
    assert (held.status, held.last_error) == (
        "suppressed", "once: already sent for key 'ada@example.com'",
    )  # fmt: skip


async def test_throttle_holds_back_what_exceeds_max_per_window(flow: Flow) -> None:
    """throttle max 2 per 1h per owner: the third in the hour is suppressed; an hour after the
    first, one more goes out."""
    for t in (SPRING, SPRING + 60, SPRING + 120, SPRING + 3601):
        flow.at(t)
        await flow.post("organization.created", {"id": f"org_{t}", "owner": "user_1"})
    flow.at(SPRING + 2 * 3600)
    await flow.run_due()
    assert len(flow.sent("slack")) == 3
    suppressed = await flow.store.list_deliveries(status="suppressed")
    assert [d.last_error for d in suppressed] == [
        "throttle (2 per 1h): the limit for key 'user_1' is reached"
    ]


async def test_the_worker_promotes_due_sends_at_most_once_a_poll(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promoting is a write on PostgreSQL and a busy worker ticks many times a second: it
    promotes at most once per poll interval (a scheduled send waits at most about that)."""
    calls: list[float] = []
    promote = flow.store.promote_due

    async def counted(now: float, limit: int = 1000) -> int:
        calls.append(now)
        return await promote(now, limit)

    monkeypatch.setattr(flow.store, "promote_due", counted)
    flow.at(SPRING)
    for _ in range(3):
        await flow.run_due()
    flow.at(SPRING + flow.worker.poll_s)
    await flow.run_due()
    assert calls == [SPRING, SPRING + flow.worker.poll_s]
