"""Slack's quirks that the conformance table does not cover: plain-text webhook answers,
chat.postMessage's 200 with ok false, Block Kit validation, the two modes of its settings."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.sinks import slack as slack_sink
from relay.sinks.testing import send
from tests.sinks.quirks import message

WEBHOOK_URL = "https://hooks.slack.com/services/T0001/B0002/webhooktokensecret42"
API_URL = "https://slack.test/api/chat.postMessage"


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (200, "ok", None),
        (400, "invalid_payload", PermanentError),
        (404, "channel_not_found", PermanentError),
        (404, "no_service", PermanentError),
        (403, "invalid_token", PermanentError),
        (410, "channel_is_archived", PermanentError),
        (500, "rollup_error", RetryableError),
    ],
)
def test_slack_webhook_plain_text_answers(
    respx_mock: respx.MockRouter, status: int, answer: str, expected: type | None
) -> None:
    """Slack webhooks answer plain text: 'ok' delivers, config errors are permanent, 5xx retry."""
    respx_mock.post(WEBHOOK_URL).mock(return_value=httpx.Response(status, text=answer))
    [error] = send(slack_sink.SINK, {"type": "slack", "webhook_url": WEBHOOK_URL},
                   message({"text": "hi"}))  # fmt: skip
    if expected is None:
        assert error is None
    else:
        assert isinstance(error, expected)
        assert answer in str(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("ratelimited", RetryableError),
        ("internal_error", RetryableError),
        ("channel_not_found", PermanentError),
        ("not_in_channel", PermanentError),
        ("invalid_auth", PermanentError),
    ],
)
def test_chat_post_message_ok_false(
    respx_mock: respx.MockRouter, error: str, expected: type[DeliveryError]
) -> None:
    """chat.postMessage's 200 {"ok": false}: rate limits and Slack faults retry, others do not."""
    respx_mock.post(API_URL).mock(
        return_value=httpx.Response(200, json={"ok": False, "error": error})
    )
    settings = {"type": "slack", "token": "xoxb-1-2-abcdef", "channel": "C1", "api_url": API_URL}
    [result] = send(slack_sink.SINK, settings, message({"text": "hi"}))
    assert isinstance(result, expected)
    assert str(result) == f"post to Slack channel C1: Slack API error {error}"


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "section"}],  # neither text nor fields
        [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}],
        [{"type": "no_such_block"}],
        [{"text": "no type"}],
        {"type": "section", "text": {"type": "mrkdwn", "text": "not a list"}},
        [{"type": "divider"}] * 51,
        [{"type": "header", "text": {"type": "mrkdwn", "text": "*New sign-up*"}}],
        [{"type": "header", "text": "a string, not a text object"}],
        [{"type": "section", "text": {"type": "markdown", "text": "hi"}}],
        [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}],
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}],
        [{"type": "context", "elements": [{"type": "plain_text", "text": ""}]}],
    ],
)
def test_invalid_block_kit_is_permanent_and_not_sent(blocks: Any) -> None:
    """Blocks that Slack would refuse (invalid_blocks) are a permanent error, and nothing is
    posted: a header's text must be plain_text, a text object's type one Slack knows, its text not
    empty, a section field at most 2,000 characters."""
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(WEBHOOK_URL).mock(return_value=httpx.Response(200, text="ok"))
        [error] = send(slack_sink.SINK, {"type": "slack", "webhook_url": WEBHOOK_URL},
                       message({"text": "hi", "blocks": blocks}))  # fmt: skip
    assert isinstance(error, PermanentError)
    assert str(error).startswith("invalid Slack blocks")
    assert not route.called


@pytest.mark.parametrize(
    ("settings", "message_text"),
    [
        ({}, "set either webhook_url, or token and channel (not both)"),
        ({"webhook_url": WEBHOOK_URL, "token": "xoxb-1"}, "set either webhook_url, or token"),
        ({"token": "xoxb-1"}, "token needs a channel"),
        ({"webhook_url": WEBHOOK_URL, "channel": "C1"}, "channel is fixed by the incoming webhook"),
        ({"webhook_url": "hooks.slack.com/x"}, "must be an absolute http:// or https:// URL"),
    ],
)
def test_slack_settings_need_exactly_one_mode(settings: dict[str, Any], message_text: str) -> None:
    """Slack settings take a webhook URL, or a bot token with a channel, and say which is wrong."""
    with pytest.raises(ValidationError, match=re.escape(message_text)) as info:
        slack_sink.SlackSettings.model_validate({"type": "slack", **settings})
    assert "xoxb" not in " ".join(e["msg"] for e in info.value.errors())
