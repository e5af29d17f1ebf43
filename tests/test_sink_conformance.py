"""One harness every built-in sink passes: 2xx, 4xx, 429, 5xx, timeouts, refused connections, and
no secret in any error text or settings repr."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx
from svix.webhooks import Webhook

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.sinks import http as http_sink
from relay.sinks import resend as resend_sink
from relay.sinks import slack as slack_sink
from relay.sinks.base import Message, SinkContext, SinkSettings, SinkType

RESEND_KEY = "re_conformance_key_0123456789"
WEBHOOK_TOKEN = "T0001/B0002/webhooktokensecret42"
WEBHOOK_URL = f"https://hooks.slack.com/services/{WEBHOOK_TOKEN}"
BOT_TOKEN = "xoxb-1111-2222-bottokensecret"
HEADER_SECRET = "Bearer header-value-secret-77"
QUERY_SECRET = "querytokensecret99"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_URL = f"https://hooks.example.test/membership?token={QUERY_SECRET}"

EVENT: dict[str, Any] = {
    "object": "event",
    "type": "user.created",
    "timestamp": 1654012591835,
    "instance_id": "ins_2Xp9",
    "data": {
        "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
        "object": "user",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
        "email_addresses": [
            {"id": "idn_29w83yL7CwVlJXylYLxcslromF1", "object": "email_address",
             "email_address": "ada@example.com", "linked_to": []},
        ],
    },
}  # fmt: skip

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*New sign-up:* Ada Lovelace"}}]


@dataclass(frozen=True)
class Case:
    """One sink under test: how to build it, what it must send, how its provider answers."""

    id: str
    sink_type: SinkType
    settings: dict[str, Any]
    method: str
    url: str
    payload: dict[str, Any]
    ok: Callable[[], httpx.Response]
    check_request: Callable[[httpx.Request, Message], None]
    secrets: tuple[str, ...]
    error_body: Callable[[int], dict[str, Any]] = field(default=lambda status: {})


def _check_resend(request: httpx.Request, message: Message) -> None:
    assert request.headers["idempotency-key"] == message.idempotency_key
    assert request.headers["authorization"] == f"Bearer {RESEND_KEY}"
    assert json.loads(request.content) == {
        "from": "Acme <hello@acme.example>",
        "to": ["Ada Lovelace <ada@example.com>"],
        "subject": "Welcome to Acme, Ada!",
        "text": "Hi Ada, welcome aboard.",
        "html": "<p>Hi Ada, welcome aboard.</p>",
        "reply_to": ["support@acme.example"],
    }


def _check_slack_webhook(request: httpx.Request, message: Message) -> None:
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {"text": "New sign-up: Ada Lovelace", "blocks": BLOCKS}


def _check_slack_api(request: httpx.Request, message: Message) -> None:
    assert request.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert json.loads(request.content) == {
        "text": "New sign-up: Ada Lovelace",
        "blocks": BLOCKS,
        "channel": "C0123456789",
    }


def _check_http(request: httpx.Request, message: Message) -> None:
    expected = {"action": "added", "user_id": "user_29w83sxmDNGwOuEthce5gg56FcC", "role": "admin"}
    assert request.content == json.dumps(expected, separators=(",", ":")).encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == HEADER_SECRET
    assert request.headers["idempotency-key"] == message.idempotency_key
    assert request.headers["webhook-id"] == message.idempotency_key
    Webhook(SIGNING_SECRET).verify(request.content, dict(request.headers))  # raises if wrong


def _resend_error(status: int) -> dict[str, Any]:
    name = {422: "validation_error", 429: "rate_limit_exceeded"}.get(status, "application_error")
    return {"statusCode": status, "name": name, "message": "Upstream said no"}


CASES = [
    Case(
        id="resend",
        sink_type=resend_sink.SINK,
        settings={"type": "resend", "api_key": RESEND_KEY, "from": "Acme <hello@acme.example>",
                  "reply_to": "support@acme.example", "base_url": "https://resend.test/"},
        method="POST",
        url="https://resend.test/emails",
        payload={"to": "Ada Lovelace <ada@example.com>", "subject": "Welcome to Acme, Ada!",
                 "text": "Hi Ada, welcome aboard.", "html": "<p>Hi Ada, welcome aboard.</p>"},
        ok=lambda: httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}),
        check_request=_check_resend,
        secrets=(RESEND_KEY,),
        error_body=_resend_error,
    ),
    Case(
        id="slack-webhook",
        sink_type=slack_sink.SINK,
        settings={"type": "slack", "webhook_url": WEBHOOK_URL},
        method="POST",
        url=WEBHOOK_URL,
        payload={"text": "New sign-up: Ada Lovelace", "blocks": BLOCKS},
        ok=lambda: httpx.Response(200, text="ok"),
        check_request=_check_slack_webhook,
        secrets=(WEBHOOK_TOKEN, "webhooktokensecret42"),
    ),
    Case(
        id="slack-api",
        sink_type=slack_sink.SINK,
        settings={"type": "slack", "token": BOT_TOKEN, "channel": "C0123456789",
                  "api_url": "https://slack.test/api/chat.postMessage"},
        method="POST",
        url="https://slack.test/api/chat.postMessage",
        payload={"text": "New sign-up: Ada Lovelace", "blocks": BLOCKS},
        ok=lambda: httpx.Response(200, json={"ok": True, "channel": "C0123456789", "ts": "1.2"}),
        check_request=_check_slack_api,
        secrets=(BOT_TOKEN,),
    ),
    Case(
        id="http",
        sink_type=http_sink.SINK,
        settings={"type": "http", "url": HOOK_URL, "headers": {"Authorization": HEADER_SECRET},
                  "signing_secret": SIGNING_SECRET, "timeout_s": 5},
        method="POST",
        url=HOOK_URL,
        payload={"body": {"action": "added", "user_id": "user_29w83sxmDNGwOuEthce5gg56FcC",
                          "role": "admin"}},
        ok=lambda: httpx.Response(204),
        check_request=_check_http,
        secrets=(HEADER_SECRET, "header-value-secret-77", QUERY_SECRET, SIGNING_SECRET,
                 SIGNING_SECRET.removeprefix("whsec_")),
    ),
]  # fmt: skip


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def message_for(case: Case) -> Message:
    return Message(
        delivery_id="dlv_01HZX",
        idempotency_key="msg_2abc:welcome:0",
        event_id="msg_2abc",
        event_type="user.created",
        rule="welcome",
        sink=case.id,
        payload=case.payload,
        event=EVENT,
    )


def settings_for(case: Case) -> SinkSettings:
    return case.sink_type.settings.model_validate(case.settings)


def deliver(
    case: Case, mock: respx.MockRouter, *effects: Any
) -> tuple[Exception | None, respx.Route]:
    """Send the sample message once per effect; the last error (or None) and the route."""
    route = mock.route(method=case.method, url=case.url).mock(side_effect=list(effects))
    error: Exception | None = None

    async def run() -> None:
        nonlocal error
        async with httpx.AsyncClient() as client:
            sink = case.sink_type.build(settings_for(case), SinkContext(http=client))
            for _ in effects:
                try:
                    await sink.send(message_for(case))
                    error = None
                except DeliveryError as exc:
                    error = exc

    asyncio.run(run())
    return error, route


def assert_no_secret(case: Case, error: Exception | None) -> None:
    texts = [repr(settings_for(case)), str(settings_for(case))]
    if error is not None:
        texts += [str(error), repr(error)]
    for text in texts:
        for secret in case.secrets:
            assert secret not in text


def test_2xx_delivers_the_exact_request(case: Case, respx_mock: respx.MockRouter) -> None:
    """A 2xx answer is a delivery; the request carries the expected URL, body and headers."""
    error, route = deliver(case, respx_mock, case.ok())
    assert error is None
    assert route.call_count == 1
    request = route.calls.last.request
    assert str(request.url) == case.url
    case.check_request(request, message_for(case))
    assert_no_secret(case, error)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_4xx_is_permanent(case: Case, respx_mock: respx.MockRouter, status: int) -> None:
    """A 4xx other than 408/425/429 is a permanent error naming the status."""
    answer = httpx.Response(status, json=case.error_body(status))
    error, _ = deliver(case, respx_mock, answer)
    assert isinstance(error, PermanentError)
    assert str(status) in str(error)
    assert_no_secret(case, error)


def test_429_with_retry_after_is_retryable_after_that_delay(
    case: Case, respx_mock: respx.MockRouter
) -> None:
    """A 429 with Retry-After: 30 is retryable no sooner than 30 s, and says so."""
    answer = httpx.Response(429, headers={"Retry-After": "30"}, json=case.error_body(429))
    error, _ = deliver(case, respx_mock, answer)
    assert isinstance(error, RetryableError)
    assert error.retry_after_s == 30
    assert "429" in str(error)
    assert "retry in 30 s" in str(error)
    assert_no_secret(case, error)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(case: Case, respx_mock: respx.MockRouter, status: int) -> None:
    """A 5xx is retryable, with no Retry-After unless the server sent one."""
    error, _ = deliver(case, respx_mock, httpx.Response(status, json=case.error_body(status)))
    assert isinstance(error, RetryableError)
    assert error.retry_after_s is None
    assert str(status) in str(error)
    assert_no_secret(case, error)


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout]
)
def test_timeout_is_retryable(
    case: Case, respx_mock: respx.MockRouter, exc: type[httpx.TimeoutException]
) -> None:
    """A timeout in any phase is retryable and says how long the sink waited."""
    error, _ = deliver(case, respx_mock, exc)
    assert isinstance(error, RetryableError)
    timeout_s = settings_for(case).timeout_s
    assert f"timed out after {timeout_s:g} s" in str(error)
    assert_no_secret(case, error)


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError])
def test_connection_failure_is_retryable(
    case: Case, respx_mock: respx.MockRouter, exc: type[httpx.TransportError]
) -> None:
    """A refused, dropped or reset connection is retryable."""
    error, _ = deliver(case, respx_mock, exc)
    assert isinstance(error, RetryableError)
    assert_no_secret(case, error)


def test_retry_after_a_failure_succeeds(case: Case, respx_mock: respx.MockRouter) -> None:
    """A send that failed with a 503 delivers on the next attempt with the same request."""
    error, route = deliver(case, respx_mock, httpx.Response(503), case.ok())
    assert error is None
    first, second = (call.request for call in route.calls)
    assert first.content == second.content
    assert first.headers.get("idempotency-key") == second.headers.get("idempotency-key")
    case.check_request(second, message_for(case))


def test_error_texts_say_what_was_attempted(case: Case, respx_mock: respx.MockRouter) -> None:
    """An error text starts with the attempted action and shows no URL path that holds a token."""
    error, _ = deliver(case, respx_mock, httpx.Response(500))
    expected = {
        "resend": "send email via Resend: 500",
        "slack-webhook": "post to Slack: 500",
        "slack-api": "post to Slack channel C0123456789: 500",
        "http": "post to https://hooks.example.test/membership: 500",
    }[case.id]
    assert str(error).startswith(expected)
