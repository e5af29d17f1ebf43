"""Every built-in sink through the conformance table (relay/sinks/testing.py): 2xx, 4xx, 429,
5xx, timeouts, refused connections, and no secret in any error text or settings repr. Each case
also checks its exact request; provider quirks are in test_quirks_<provider>.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from svix.webhooks import Webhook

from relay.errors import RetryableError
from relay.sinks import http as http_sink
from relay.sinks import resend as resend_sink
from relay.sinks import slack as slack_sink
from relay.sinks import testing
from relay.sinks.base import Message, SecretStr, SinkContext, SinkSettings, SinkType

RESEND_KEY = "re_conformance_key_0123456789"
WEBHOOK_TOKEN = "T0001/B0002/webhooktokensecret42"
WEBHOOK_URL = f"https://hooks.slack.com/services/{WEBHOOK_TOKEN}"
BOT_TOKEN = "xoxb-1111-2222-bottokensecret"
HEADER_SECRET = "Bearer header-value-secret-77"
QUERY_SECRET = "querytokensecret99"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_URL = f"https://hooks.example.test/membership?token={QUERY_SECRET}"

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*New sign-up:* Ada Lovelace"}}]


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


def _resend_409(name: str) -> httpx.Response:
    return httpx.Response(409, json={"statusCode": 409, "name": name, "message": "Same key"})


# Resend's own answers: its two idempotency conflicts, and 2xx answers that are not its own
# (a proxy, a stub, a changed API): none of those is a sent email.
RESEND_ANSWERS = (
    testing.Answer("409-concurrent", lambda: _resend_409("concurrent_idempotent_requests"),
                   retryable=True, says=("409", "concurrent_idempotent_requests", "retry in 10 s"),
                   retry_after_s=10),
    testing.Answer("409-invalid", lambda: _resend_409("invalid_idempotent_request"),
                   retryable=False, says=("409", "invalid_idempotent_request")),
    testing.Answer("2xx-empty-object", lambda: httpx.Response(200, json={}),
                   retryable=True, says=("200", "no email id", "received {}")),
    testing.Answer("2xx-list", lambda: httpx.Response(200, json=[]),
                   retryable=True, says=("200", "no email id", "received []")),
    testing.Answer("2xx-error-object", lambda: httpx.Response(200, json={"error": "quota"}),
                   retryable=True, says=("200", "no email id", '"error"', '"quota"')),
    testing.Answer("2xx-no-content", lambda: httpx.Response(204),
                   retryable=True, says=("204", "no email id", "received an empty body")),
    testing.Answer("2xx-empty-json", lambda: httpx.Response(200, headers={
                   "Content-Type": "application/json"}),
                   retryable=True, says=("200", "no email id", "received an empty body")),
    testing.Answer("2xx-html", lambda: httpx.Response(200, html="<h1>Welcome</h1>"),
                   retryable=True, says=("200", "<h1>Welcome</h1>", "text/html")),
)  # fmt: skip

SLACK_API_ANSWERS = (
    testing.Answer("invalid-blocks", lambda: httpx.Response(200, json={
                   "ok": False, "error": "invalid_blocks"}),
                   retryable=False, says=("invalid_blocks",)),
    testing.Answer("ratelimited", lambda: httpx.Response(200, headers={"Retry-After": "3"}, json={
                   "ok": False, "error": "ratelimited"}),
                   retryable=True, says=("ratelimited",), retry_after_s=3),
)  # fmt: skip

CASES = [
    testing.SinkCase(
        name="resend",
        attempted="send email via Resend",
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
        answers=RESEND_ANSWERS,
    ),
    testing.SinkCase(
        name="slack-webhook",
        attempted="post to Slack",
        sink_type=slack_sink.SINK,
        settings={"type": "slack", "webhook_url": WEBHOOK_URL},
        method="POST",
        url=WEBHOOK_URL,
        payload={"text": "New sign-up: Ada Lovelace", "blocks": BLOCKS},
        ok=lambda: httpx.Response(200, text="ok"),
        check_request=_check_slack_webhook,
        secrets=(WEBHOOK_TOKEN, "webhooktokensecret42"),
    ),
    testing.SinkCase(
        name="slack-api",
        attempted="post to Slack channel C0123456789",
        sink_type=slack_sink.SINK,
        settings={"type": "slack", "token": BOT_TOKEN, "channel": "C0123456789",
                  "api_url": "https://slack.test/api/chat.postMessage"},
        method="POST",
        url="https://slack.test/api/chat.postMessage",
        payload={"text": "New sign-up: Ada Lovelace", "blocks": BLOCKS},
        ok=lambda: httpx.Response(200, json={"ok": True, "channel": "C0123456789", "ts": "1.2"}),
        check_request=_check_slack_api,
        secrets=(BOT_TOKEN,),
        answers=SLACK_API_ANSWERS,
    ),
    testing.SinkCase(
        name="http",
        attempted="post to https://hooks.example.test/membership",
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


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> testing.SinkCase:
    return request.param  # type: ignore[no-any-return]


def rows(group: str) -> list[Any]:
    """The table's rows of ``group``, each with its variant as its test id."""
    return [pytest.param(s, id=s.variant) for s in testing.SCENARIOS if s.group == group]


def row(group: str) -> testing.Scenario:
    (only,) = [s for s in testing.SCENARIOS if s.group == group]
    return only


def test_2xx_delivers_the_exact_request(
    case: testing.SinkCase, respx_mock: respx.MockRouter
) -> None:
    """A 2xx answer is a delivery; the request carries the expected URL, body and headers."""
    testing.check(case, row("2xx"), respx_mock)


@pytest.mark.parametrize("scenario", rows("4xx"))
def test_4xx_is_permanent(
    case: testing.SinkCase, respx_mock: respx.MockRouter, scenario: testing.Scenario
) -> None:
    """A 4xx other than 408/425/429 is a permanent error naming the status."""
    testing.check(case, scenario, respx_mock)


def test_429_with_retry_after_is_retryable_after_that_delay(
    case: testing.SinkCase, respx_mock: respx.MockRouter
) -> None:
    """A 429 with Retry-After: 30 is retryable no sooner than 30 s, and says so."""
    testing.check(case, row("429"), respx_mock)


@pytest.mark.parametrize("scenario", rows("5xx"))
def test_5xx_is_retryable(
    case: testing.SinkCase, respx_mock: respx.MockRouter, scenario: testing.Scenario
) -> None:
    """A 5xx is retryable, with no Retry-After unless the server sent one."""
    testing.check(case, scenario, respx_mock)


@pytest.mark.parametrize("scenario", rows("timeout"))
def test_timeout_is_retryable(
    case: testing.SinkCase, respx_mock: respx.MockRouter, scenario: testing.Scenario
) -> None:
    """A timeout in any phase is retryable and says how long the sink waited."""
    testing.check(case, scenario, respx_mock)


@pytest.mark.parametrize("scenario", rows("connection"))
def test_connection_failure_is_retryable(
    case: testing.SinkCase, respx_mock: respx.MockRouter, scenario: testing.Scenario
) -> None:
    """A refused, dropped or reset connection is retryable."""
    testing.check(case, scenario, respx_mock)


def test_retry_after_a_failure_succeeds(
    case: testing.SinkCase, respx_mock: respx.MockRouter
) -> None:
    """A send that failed with a 503 delivers on the next attempt with the same request."""
    testing.check(case, row("retry"), respx_mock)


def test_error_texts_say_what_was_attempted(
    case: testing.SinkCase, respx_mock: respx.MockRouter
) -> None:
    """An error text starts with the attempted action and shows no URL path that holds a token."""
    testing.check(case, row("what"), respx_mock)


ANSWERS = [
    pytest.param(case, scenario, id=f"{case.name}-{scenario.variant}")
    for case in CASES
    for scenario in testing.rows(case)
    if scenario.group == "answer"
]


@pytest.mark.parametrize(("own", "scenario"), ANSWERS)
def test_a_providers_own_answers_mean_what_the_case_says(
    own: testing.SinkCase, scenario: testing.Scenario, respx_mock: respx.MockRouter
) -> None:
    """Each of a provider's own answers (Resend's 409s and its 2xx without an email id, Slack's
    `ok: false` errors) is retryable or permanent as its case says, and the error says what was
    received."""
    testing.check(own, scenario, respx_mock)


def test_every_row_of_the_table_has_its_test_here() -> None:
    """The tests above cover every group of the table, so a new row runs for the built-ins too."""
    covered = {"2xx", "4xx", "429", "5xx", "timeout", "connection", "retry", "what"}
    assert {s.group for s in testing.SCENARIOS} == covered
    assert {s.group for case in CASES for s in testing.rows(case)} == covered | {"answer"}


def test_run_plays_the_whole_table(case: testing.SinkCase, respx_mock: respx.MockRouter) -> None:
    """testing.run, as a plugin's own suite calls it, passes every built-in sink."""
    testing.run(case, respx_mock)


class NaiveSettings(SinkSettings):
    url: str
    token: SecretStr


class NaiveSink:
    """Posts the payload; any answer but a 2xx is "retryable", quoting its token; lets httpx's
    exceptions out."""

    def __init__(self, settings: NaiveSettings, context: SinkContext) -> None:
        self.settings, self.http = settings, context.http

    async def send(self, message: Message) -> None:
        token = self.settings.token.reveal()
        response = await self.http.post(self.settings.url, json=dict(message.payload))
        if response.status_code >= 300:
            raise RetryableError(f"post to Naive with {token}: {response.status_code}")


NAIVE = testing.SinkCase(
    name="naive",
    sink_type=SinkType("naive", NaiveSettings, NaiveSink),
    settings={"type": "naive", "url": "https://naive.test/in", "token": "naive-token-secret"},
    payload={"text": "hi"},
    url="https://naive.test/in",
    ok=lambda: httpx.Response(200),
    attempted="post to Naive",
    secrets=("naive-token-secret",),
)


def test_a_sink_that_breaks_the_rules_fails_the_rows_it_breaks(
    respx_mock: respx.MockRouter,
) -> None:
    """A sink that retries a 4xx, ignores Retry-After, quotes its token and lets httpx errors
    out fails every row but 2xx and retry, and the error names each row and what was wrong."""
    with pytest.raises(testing.ConformanceError) as info:
        testing.run(NAIVE, respx_mock)
    lines = str(info.value).splitlines()
    assert lines[0] == "naive fails 18 of 20 rows:"
    assert {line.split(":")[0] for line in lines[1:]} == {
        f"naive, row {s}" for s in testing.SCENARIOS if s.group not in ("2xx", "retry")
    }
    assert (
        "naive, row 4xx-400: expected PermanentError, got "
        "RetryableError('post to Naive with naive-token-secret: 400')"
    ) in lines
    assert "naive, row 429: retry_after_s is None, expected 30 (from Retry-After)" in lines
    assert "naive, row 5xx-503: a secret is in the error text: " in "\n".join(lines)
    assert any(
        line.startswith("naive, row timeout-ReadTimeout: raised ReadTimeout") for line in lines
    )
