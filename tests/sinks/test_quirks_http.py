"""The HTTP sink's quirks that the conformance table does not cover: its settings, redirects,
the event envelope as the default body, bounded answers, an HTTP-date Retry-After, a signing
secret without its base64 padding."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from relay.errors import PermanentError, RetryableError
from relay.sinks import http as http_sink
from relay.sinks.testing import send
from tests.sinks.quirks import message


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


def test_http_signing_secret_without_padding_signs_as_the_reference_library_checks(
    respx_mock: respx.MockRouter,
) -> None:
    """An outbound signing secret without its base64 `=` padding is the same key as inbound
    (one rule for every secret): the Standard Webhooks reference library verifies what is sent."""
    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + "cGFydG5lci1rZXktb2YtMTc"  # base64 of 17 bytes, its '=' left out
    route = respx_mock.post("https://hooks.example.test/in").mock(return_value=httpx.Response(204))
    settings = {"type": "http", "url": "https://hooks.example.test/in", "signing_secret": secret}
    assert send(http_sink.SINK, settings, message({"body": {"n": 1}})) == [None]
    request = route.calls.last.request
    Webhook(secret).verify(request.content, dict(request.headers))  # raises if it does not match
