"""Planning an event's ingest (relay.workflow.plan): due times and statuses, the steps each
workflow key makes, and what a key that does not render does (never lose the event)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import DeliveryStatus
from relay.store.steps import Batched, Cancel, Limited
from relay.workflow.plan import Arrival, plan_event
from relay.workflow.spec import MAX_KEY_CHARS, clean_key
from tests.delivery.workflow_harness import DAY, RULES, load, utc

T0 = utc("2026-03-27 10:00")  # a Friday, 11:00 in Berlin


@pytest.fixture
def rules(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load(tmp_path).rules


def arrival(type: str = "user.created", at: float = T0) -> Arrival:
    return Arrival("clerk", "msg_1", "evt_1", type, at)


def test_a_plain_send_is_pending_and_a_later_one_scheduled(rules) -> None:  # type: ignore[no-untyped-def]
    """The welcome is due now (pending); the tips, 3 days later in the window, are scheduled;
    both carry the rule's cancel key."""
    plan = plan_event(rules, {"type": "user.created", "data": {"id": "user_1"}}, arrival())
    welcome, tips = plan.deliveries
    assert (welcome.status, welcome.next_attempt_at) == (DeliveryStatus.PENDING, T0)
    assert (tips.status, tips.next_attempt_at) == (DeliveryStatus.SCHEDULED, T0 + 3 * DAY)
    assert {welcome.cancel_key, tips.cancel_key} == {"user_1"}
    assert plan.scheduled == 1
    assert plan.rules == ["onboarding", "signups"]
    assert plan.sends == 3
    (digest,) = plan.steps
    assert isinstance(digest, Batched)
    assert (digest.rule, digest.digest_key, digest.max, digest.lead) == ("signups", "", 3, False)
    assert (digest.closes_at, digest.due_full) == (T0 + 600, T0)
    assert [d.status for d in digest.members] == [DeliveryStatus.BATCHED]
    assert [d.status for d in digest.digests] == [DeliveryStatus.SCHEDULED]
    assert digest.digests[0].idempotency_key != digest.members[0].idempotency_key


def test_a_digest_in_a_window_closes_at_its_opening(rules) -> None:  # type: ignore[no-untyped-def]
    """A digest rule with a send window: a batch opened on Friday night closes (and is sent)
    at Monday 09:00 in Berlin, holding the weekend's events; if it fills, it is due then too."""
    friday_night = utc("2026-03-27 21:00")
    plan = plan_event(rules, {"type": "organization.updated", "data": {"id": "org_1"}},
                      arrival("organization.updated", friday_night))  # fmt: skip
    (entry,) = plan.steps
    assert isinstance(entry, Batched)
    monday = utc("2026-03-30 07:00")  # 09:00 in Berlin, summer time since Sunday
    assert (entry.closes_at, entry.due_full) == (monday, monday)


def test_a_cancelling_event_makes_a_cancel_naming_itself(rules) -> None:  # type: ignore[no-untyped-def]
    plan = plan_event(rules, {"type": "user.deleted", "data": {"id": "user_1"}},
                      arrival("user.deleted"))  # fmt: skip
    assert plan.steps == [Cancel("onboarding", "user_1", "cancelled by user.deleted msg_1 (evt_1)")]
    assert plan.deliveries == []


def test_once_and_throttle_make_limited_steps(rules) -> None:  # type: ignore[no-untyped-def]
    once = plan_event(rules, {"type": "user.updated", "data": {"email": "ada@example.com"}},
                      arrival("user.updated"))  # fmt: skip
    (step,) = once.steps
    assert isinstance(step, Limited)
    assert (step.limit_key, step.max, step.per_s) == ("ada@example.com", 1, None)
    assert step.reason == "once: already sent for key 'ada@example.com'"
    throttle = plan_event(rules, {"type": "organization.created", "data": {"owner": "u"}},
                          arrival("organization.created"))  # fmt: skip
    (step,) = throttle.steps
    assert isinstance(step, Limited)
    assert (step.limit_key, step.max, step.per_s) == ("u", 2, 3600)


def test_keys_that_do_not_render_lose_nothing(rules) -> None:  # type: ignore[no-untyped-def]
    """No cancel key: the sends are stored, not cancellable; a limit's: held back, saying why;
    a digest's: the event goes to the empty key's batch. Each is a problem for the log."""
    created = plan_event(rules, {"type": "user.created", "data": {}}, arrival())
    assert [d.cancel_key for d in created.deliveries] == [None, None]
    updated = plan_event(rules, {"type": "user.updated", "data": {}}, arrival("user.updated"))
    (step,) = updated.steps
    assert isinstance(step, Limited)
    assert step.limit_key is None
    assert step.reason == "once: its key did not render, so relay cannot tell events apart"
    session = plan_event(rules, {"type": "session.created", "data": {}},
                         arrival("session.created"))  # fmt: skip
    (entry,) = session.steps
    assert isinstance(entry, Batched)
    assert entry.digest_key == ""
    assert created.problems == [
        "rule onboarding: cancel key did not render: undefined variable: 'dict object' has no"
        " attribute 'id'"
    ]
    assert len(updated.problems) == len(session.problems) == 1


def test_a_rule_that_both_sends_and_cancels_on_an_event_renders_its_key_once(
    tmp_path: Path,
) -> None:
    """A rule on user.* that cancels on user.deleted: a user.deleted both cancels and is sent;
    its key is rendered once (a key that fails is one problem, not two)."""
    both = RULES.replace("events: user.created\n    cancel_on", "events: user.*\n    cancel_on", 1)
    assert both != RULES
    rules = load(tmp_path, both).rules
    deleted = plan_event(rules, {"type": "user.deleted", "data": {"id": "user_1"}},
                         arrival("user.deleted"))  # fmt: skip
    (cancel,) = [s for s in deleted.steps if isinstance(s, Cancel)]
    assert cancel.cancel_key == "user_1"
    assert {d.cancel_key for d in deleted.deliveries} == {"user_1"}
    broken = plan_event(rules, {"type": "user.deleted", "data": {}}, arrival("user.deleted"))
    assert broken.problems == [
        "rule onboarding: cancel key did not render: undefined variable: 'dict object' has no"
        " attribute 'id'"
    ]


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        ("user_1", "user_1"),
        ("nul\x00byte", "nul\\x00byte"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ],
)
def test_clean_key_makes_any_key_storable(key: str, stored: str) -> None:
    """Keys are event data: a NUL or a lone surrogate is escaped (no database stores them)."""
    assert clean_key(key) == stored


def test_clean_key_hashes_a_long_key() -> None:
    long = "x" * (MAX_KEY_CHARS + 1)
    assert clean_key(long).startswith("sha256:")
    assert clean_key(long) == clean_key(long)
    assert len(clean_key(long)) < MAX_KEY_CHARS
