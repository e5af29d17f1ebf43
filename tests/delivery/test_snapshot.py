"""What each attempt rendered is stored with it: the payload as JSON, secrets redacted, bounded,
and storable whatever the event held."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from relay.delivery.snapshot import MAX_STORED_CHARS, snapshot
from tests.delivery.worker_harness import ALPHA_TOKEN, Harness, ScriptedSink, retryable

pytestmark = pytest.mark.anyio


def test_a_snapshot_is_the_payload_as_json() -> None:
    """A small payload is stored whole, as sorted JSON."""
    payload = {"to": "ada@example.com", "subject": "Hi", "n": 3, "blocks": [{"type": "divider"}]}
    assert json.loads(snapshot(payload, [])) == payload


def test_secrets_in_a_payload_are_redacted() -> None:
    """A known secret in any string of the payload is stored as [redacted]."""
    stored = snapshot({"params": {"token": "Bearer tok_live_1234567"}}, ["tok_live_1234567"])
    assert json.loads(stored) == {"params": {"token": "Bearer [redacted]"}}


def test_hostile_text_is_stored_as_ascii_json() -> None:
    """A NUL or a lone surrogate (valid JSON escapes in an event) becomes an escape, not a
    character no database can store."""
    stored = snapshot({"text": "a\x00b\udcff ü"}, [])
    assert stored.isascii()
    assert json.loads(stored) == {"text": "a\x00b\udcff ü"}


def test_a_large_payload_is_clipped_to_the_bound() -> None:
    """Long parts are clipped (saying how much was left out) until the whole fits the bound."""
    payload = {"html": "x" * 100_000, "text": "y" * 50_000, "subject": "Hi"}
    stored = snapshot(payload, [])
    assert len(stored) <= MAX_STORED_CHARS
    shown = json.loads(stored)
    assert shown["subject"] == "Hi"
    assert shown["html"].endswith(" more characters not stored]")


def test_a_payload_of_many_parts_is_not_stored_past_the_bound() -> None:
    """A payload too large even with every string clipped is replaced by a note."""
    stored = snapshot({"rows": [f"{i:05}" * 20 for i in range(20_000)]}, [])
    assert len(stored) <= MAX_STORED_CHARS
    assert json.loads(stored)["not_stored"].startswith("the message is too large to store")


async def test_each_attempt_stores_what_it_rendered(make_harness: Callable[..., Harness]) -> None:
    """A failed attempt and the delivered one after it each keep the message they sent."""
    h = make_harness(alpha=ScriptedSink([retryable()]))
    dlv = await h.add("to-alpha", "alpha")
    await h.run_due()
    h.clock.now = (await h.delivery(dlv)).next_attempt_at
    await h.run_due()
    attempts = await h.attempts(dlv)
    assert [a.outcome for a in attempts] == ["failed", "delivered"]
    assert [json.loads(a.rendered or "") for a in attempts] == [{"body": {"user": "user_1"}}] * 2


async def test_a_secret_that_reaches_a_payload_is_stored_redacted(
    make_harness: Callable[..., Harness],
) -> None:
    """Event data that holds a configured secret is redacted in the stored render."""
    h = make_harness()
    dlv = await h.add("to-alpha", "alpha", data={"id": ALPHA_TOKEN})
    await h.run_due()
    (attempt,) = await h.attempts(dlv)
    assert attempt.rendered is not None
    assert "tok_live" not in attempt.rendered
    assert json.loads(attempt.rendered) == {"body": {"user": "[redacted]"}}


async def test_a_template_that_fails_stores_no_render(make_harness: Callable[..., Harness]) -> None:
    """An attempt that never rendered (its template failed) has no render stored, while one
    that rendered, beside it, has."""
    h = make_harness()
    dlv = await h.add("nickname", "alpha", type="user.updated")
    sent = await h.add("to-alpha", "alpha")
    await h.run_due()
    (attempt,) = await h.attempts(dlv)
    assert (attempt.outcome, attempt.rendered) == ("dead", None)
    (delivered,) = await h.attempts(sent)
    assert delivered.outcome == "delivered"
    assert json.loads(delivered.rendered or "") == {"body": {"user": "user_2"}}


def test_a_payload_nested_too_deep_is_stored_as_a_note() -> None:
    """A payload deeper than the recursion limit (hostile event data) becomes a note, no error."""
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    assert json.loads(snapshot({"body": deep}, [])) == {
        "not_stored": "the message is nested too deep to store"
    }
