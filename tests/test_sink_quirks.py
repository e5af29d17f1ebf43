"""Provider quirks of the built-in sinks that the conformance harness does not cover."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.sinks import http as http_sink
from relay.sinks import resend as resend_sink
from relay.sinks import slack as slack_sink
from relay.sinks.base import Message, SinkContext, SinkType
from relay.sinks.httpcheck import parse_retry_after

WEBHOOK_URL = "https://hooks.slack.com/services/T0001/B0002/webhooktokensecret42"
API_URL = "https://slack.test/api/chat.postMessage"
RESEND = {"type": "resend", "api_key": "re_key_one_123456", "from": "Acme <hi@acme.example>",
          "base_url": "https://resend.test"}  # fmt: skip
EMAIL = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi Ada"}


def message(payload: dict[str, Any], key: str = "msg_1:welcome:0") -> Message:
    return Message("dlv_1", key, "msg_1", "user.created", "welcome", "sink", payload,
                   {"type": "user.created", "data": {"id": "user_1"}})  # fmt: skip


def send(sink_type: SinkType, settings: dict[str, Any], *messages: Message) -> list[Any]:
    """Build the sink and send each message; the error (or None) of each send."""

    async def run() -> list[Any]:
        async with httpx.AsyncClient() as client:
            sink = sink_type.build(sink_type.settings.model_validate(settings), SinkContext(client))
            results: list[Any] = []
            for msg in messages:
                try:
                    await sink.send(msg)
                    results.append(None)
                except DeliveryError as exc:
                    results.append(exc)
            return results

    return asyncio.run(run())


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
    ],
)
def test_invalid_block_kit_is_permanent_and_not_sent(blocks: Any) -> None:
    """Blocks that fail Block Kit validation are a permanent error, and nothing is posted."""
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


@pytest.mark.parametrize(
    ("settings", "message_text"),
    [
        ({"url": "ftp://files.example.test/in"}, "must be an absolute http:// or https:// URL"),
        ({"url": "/relative"}, "must be an absolute http:// or https:// URL"),
        ({"method": "GET"}, "Input should be 'POST', 'PUT', 'PATCH' or 'DELETE'"),
        ({"headers": {"Content-Type": "text/plain"}}, "Content-Type is set by relay"),
        ({"headers": {"X-Token": "abc\r\nX-Evil: 1"}}, "the value of X-Token holds a line break"),
        ({"signing_secret": "not-a-whsec-secret"}, "signing secret must start with 'whsec_'"),
        ({"signing_secret": "whsec_!!!"}, "signing secret is not valid base64 after 'whsec_'"),
        (
            {"signing_secret": "whsec_c2hvcnQ="},
            "signing secret is too short (5 bytes; expected at least 16, Clerk's are 24)",
        ),
    ],
)
def test_http_settings_are_checked_at_load(settings: dict[str, Any], message_text: str) -> None:
    """HTTP sink settings reject a non-http URL, reserved or broken headers and a bad secret."""
    raw = {"type": "http", "url": "https://hooks.example.test/in", **settings}
    with pytest.raises(ValidationError) as info:
        http_sink.HttpSettings.model_validate(raw)
    messages = " ".join(e["msg"] for e in info.value.errors())
    assert message_text in messages
    assert "abc" not in messages
    assert "!!!" not in messages


def test_resend_non_json_502_is_retryable(respx_mock: respx.MockRouter) -> None:
    """A 502 HTML page from a proxy in front of Resend is retryable, with its status."""
    respx_mock.post("https://resend.test/emails").mock(
        return_value=httpx.Response(502, html="<html><body>Bad Gateway</body></html>")
    )
    [error] = send(resend_sink.SINK, RESEND, message(EMAIL))
    assert isinstance(error, RetryableError)
    assert error.status == 502


def test_resend_retries_carry_the_same_idempotency_key(respx_mock: respx.MockRouter) -> None:
    """Two sends of the same message carry the same Idempotency-Key, so Resend sends it once."""
    route = respx_mock.post("https://resend.test/emails").mock(
        side_effect=[
            httpx.Response(500, json={"statusCode": 500, "name": "application_error",
                                      "message": "Internal server error"}),
            httpx.Response(200, json={"id": "email_1"}),
        ]
    )  # fmt: skip
    first, second = send(resend_sink.SINK, RESEND, message(EMAIL), message(EMAIL))
    assert isinstance(first, RetryableError)
    assert second is None
    keys = [call.request.headers["idempotency-key"] for call in route.calls]
    assert keys == ["msg_1:welcome:0", "msg_1:welcome:0"]


def test_resend_empty_recipient_is_permanent_before_any_request() -> None:
    """An email whose `to` rendered empty fails permanently without calling Resend."""
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post("https://resend.test/emails")
        [error] = send(resend_sink.SINK, RESEND, message({**EMAIL, "to": "  "}))
    assert isinstance(error, PermanentError)
    assert str(error).startswith("no recipient")
    assert not route.called


def test_resend_sinks_with_different_keys_do_not_share_them(respx_mock: respx.MockRouter) -> None:
    """Concurrent sends through two Resend sinks each use their own key and base URL."""
    one = respx_mock.post("https://one.test/emails").mock(
        return_value=httpx.Response(200, json={"id": "a"})
    )
    two = respx_mock.post("https://two.test/emails").mock(
        return_value=httpx.Response(200, json={"id": "b"})
    )

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            sinks = [
                resend_sink.SINK.build(resend_sink.SINK.settings.model_validate(
                    {**RESEND, "api_key": f"re_key_{name}_123456", "base_url": f"https://{name}.test"}
                ), SinkContext(client))
                for name in ("one", "two")
            ]  # fmt: skip
            sends = [sink.send(message(EMAIL, f"k{i}")) for i in range(5) for sink in sinks]
            await asyncio.gather(*sends)

    asyncio.run(run())
    assert one.call_count == two.call_count == 5
    assert {c.request.headers["authorization"] for c in one.calls} == {"Bearer re_key_one_123456"}
    assert {c.request.headers["authorization"] for c in two.calls} == {"Bearer re_key_two_123456"}


def test_http_redirect_is_not_followed_and_permanent() -> None:
    """A 3xx from the HTTP sink's URL is permanent and the Location is never requested."""
    with respx.mock(assert_all_called=False) as mock:
        mock.post("https://hooks.example.test/in").mock(
            return_value=httpx.Response(302, headers={"Location": "https://elsewhere.test/in"})
        )
        elsewhere = mock.post("https://elsewhere.test/in")
        [error] = send(http_sink.SINK, {"type": "http", "url": "https://hooks.example.test/in"},
                       message({"body": {"a": 1}}))  # fmt: skip
    assert isinstance(error, PermanentError)
    assert "302 Found, redirects are not followed" in str(error)
    assert not elsewhere.called


def test_http_without_body_sends_the_event_envelope(respx_mock: respx.MockRouter) -> None:
    """With no rendered body the HTTP sink posts the event envelope unchanged."""
    route = respx_mock.put("https://hooks.example.test/in").mock(return_value=httpx.Response(200))
    msg = message({})
    [error] = send(
        http_sink.SINK,
        {"type": "http", "url": "https://hooks.example.test/in", "method": "put"},
        msg,
    )
    assert error is None
    assert json.loads(route.calls.last.request.content) == msg.event
    assert "webhook-signature" not in route.calls.last.request.headers


def test_http_reads_at_most_64_kib_of_an_answer(respx_mock: respx.MockRouter) -> None:
    """A huge error answer is cut to a bounded excerpt in the error text."""
    respx_mock.post("https://hooks.example.test/in").mock(
        return_value=httpx.Response(500, content=b"x" * 10_000_000)
    )
    [error] = send(http_sink.SINK, {"type": "http", "url": "https://hooks.example.test/in"},
                   message({"body": {}}))  # fmt: skip
    assert isinstance(error, RetryableError)
    assert len(str(error)) < 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (format_datetime(datetime(2030, 1, 1, 0, 2, tzinfo=UTC), usegmt=True), 120.0),
        ("Tue, 01 Jan 2030 00:02:00 GMT", 120.0),
        ("Mon, 31 Dec 2029 23:00:00 GMT", 0.0),  # in the past: retry now
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delay-seconds or an HTTP-date (relative to now); anything else is ignored."""
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected


def test_http_date_retry_after_reaches_the_error(respx_mock: respx.MockRouter) -> None:
    """A 503 with an HTTP-date Retry-After gives a retry delay in seconds from now."""
    when = format_datetime(datetime.fromtimestamp(datetime.now(UTC).timestamp() + 600, UTC), True)
    respx_mock.post("https://hooks.example.test/in").mock(
        return_value=httpx.Response(503, headers={"Retry-After": when})
    )
    [error] = send(http_sink.SINK, {"type": "http", "url": "https://hooks.example.test/in"},
                   message({"body": {}}))  # fmt: skip
    assert isinstance(error, RetryableError)
    assert error.retry_after_s is not None
    assert 590 <= error.retry_after_s <= 600
