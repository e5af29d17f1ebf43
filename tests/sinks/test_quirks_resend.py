"""Resend's quirks that the conformance table does not cover: a proxy's HTML error page, the
idempotency key across retries, an empty recipient, two sinks with two keys, a retry that finds the
first attempt still in progress, an email id under another content type."""

from __future__ import annotations

import asyncio
import json

import httpx
import respx

from relay.errors import PermanentError, RetryableError
from relay.sinks import resend as resend_sink
from relay.sinks.base import SinkContext
from relay.sinks.testing import send
from tests.sinks.quirks import message

RESEND = {"type": "resend", "api_key": "re_key_one_123456", "from": "Acme <hi@acme.example>",
          "base_url": "https://resend.test"}  # fmt: skip
EMAIL = {"to": "ada@example.com", "subject": "Welcome", "text": "Hi Ada"}


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


def test_resend_concurrent_409_then_the_email_id_is_one_delivery(
    respx_mock: respx.MockRouter,
) -> None:
    """The retry of an attempt that relay's own deadline cut short finds Resend still sending:
    409 concurrent_idempotent_requests is retried after 10 s, and the next answer delivers."""
    route = respx_mock.post("https://resend.test/emails").mock(
        side_effect=[
            httpx.ReadTimeout("deadline"),
            httpx.Response(409, json={"statusCode": 409, "name": "concurrent_idempotent_requests",
                                      "message": "still in progress"}),
            httpx.Response(200, json={"id": "email_1"}),
        ]
    )  # fmt: skip
    first, second, third = send(resend_sink.SINK, RESEND, *[message(EMAIL)] * 3)
    assert isinstance(first, RetryableError)
    assert isinstance(second, RetryableError)
    assert (second.status, second.retry_after_s) == (409, 10)
    assert third is None
    assert {c.request.headers["idempotency-key"] for c in route.calls} == {"msg_1:welcome:0"}


def test_resend_email_id_with_another_content_type_is_a_delivery(
    respx_mock: respx.MockRouter,
) -> None:
    """A 200 whose body is Resend's JSON answer is a delivery even when a proxy relabelled it
    text/plain (resend itself would call it a 500, and the email would be sent again)."""
    respx_mock.post("https://resend.test/emails").mock(
        return_value=httpx.Response(200, text='{"id": "email_1"}')
    )
    assert send(resend_sink.SINK, RESEND, message(EMAIL)) == [None]


def test_resend_gets_the_unsubscribe_headers_of_the_payload(respx_mock: respx.MockRouter) -> None:
    """The List-Unsubscribe headers relay adds to an email of a category go in Resend's
    `headers` (Resend's POST /emails takes custom headers); an email without them sends none."""
    route = respx_mock.post("https://resend.test/emails").mock(
        return_value=httpx.Response(200, json={"id": "email_1"})
    )
    headers = {
        "List-Unsubscribe": "<https://relay.acme.example/unsubscribe/k.p.m>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    first, second = send(
        resend_sink.SINK, RESEND, message({**EMAIL, "headers": headers}), message(EMAIL)
    )
    assert first is second is None
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert bodies[0]["headers"] == headers
    assert "headers" not in bodies[1]
