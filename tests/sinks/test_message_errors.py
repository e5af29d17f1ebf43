"""A message that no retry can fix, in every built-in sink: event text that is not valid Unicode
(a lone surrogate, which JSON may carry as ``"\\ud800"``) or an event nested deeper than Python's
encoders go is the delivery's own PermanentError, raised before anything is sent, saying what is
wrong; never an unexpected exception (which the worker would retry, and count against the sink's
circuit)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
import respx

from relay.errors import PermanentError
from relay.sinks import http as http_sink
from relay.sinks import resend as resend_sink
from relay.sinks import slack as slack_sink
from relay.sinks.base import SinkType
from relay.sinks.testing import send_async
from tests.sinks.quirks import message
from tests.sinks.sql_example import Database, open_sink, settings_for
from tests.sinks.sql_example import message as sql_message

LONE = "Ada \ud800 Lovelace"  # what json.loads makes of "Ada \ud800 Lovelace"
SLACK_URL = "https://hooks.slack.com/services/T0001/B0002/webhooktokensecret42"

CASES: list[tuple[str, SinkType, dict[str, Any], str, dict[str, Any]]] = [
    ("resend", resend_sink.SINK,
     {"type": "resend", "api_key": "re_123456789", "from": "Acme <a@acme.test>",
      "base_url": "https://resend.test"},
     "https://resend.test/emails",
     {"to": "ada@example.com", "subject": f"Welcome, {LONE}", "text": "hi"}),
    ("slack", slack_sink.SINK, {"type": "slack", "webhook_url": SLACK_URL}, SLACK_URL,
     {"text": f"New sign-up: {LONE}"}),
    ("http body", http_sink.SINK, {"type": "http", "url": "https://hook.test/in"},
     "https://hook.test/in", {"body": {"name": LONE}}),
]  # fmt: skip


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("name", "sink_type", "settings", "url", "payload"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.anyio
async def test_text_that_is_not_unicode_is_the_messages_permanent_error(
    respx_mock: respx.MockRouter,
    name: str,
    sink_type: SinkType,
    settings: dict[str, Any],
    url: str,
    payload: dict[str, Any],
) -> None:
    """A lone surrogate in what the sink would send: PermanentError naming it, nothing sent."""
    route = respx_mock.post(url).mock(return_value=httpx.Response(200, json={"id": "x"}))
    [error] = await send_async(sink_type, settings, message(payload))
    assert isinstance(error, PermanentError), error
    assert "not valid Unicode" in str(error)
    assert "'\\ud800'" in str(error)
    assert route.call_count == 0


@pytest.mark.anyio
async def test_http_envelope_with_a_lone_surrogate_or_nested_too_deep_is_permanent(
    respx_mock: respx.MockRouter,
) -> None:
    """The http sink without a body template sends the event itself: an event holding a lone
    surrogate, or nested 100,000 deep, fails as the message's own error, not the sink's."""
    route = respx_mock.post("https://hook.test/in").mock(return_value=httpx.Response(200))
    settings = {"type": "http", "url": "https://hook.test/in"}
    bad_text = dataclasses.replace(message({}), event={"data": {"name": LONE}})
    too_deep = dataclasses.replace(message({}), event={"data": deep(100_000)})
    text_error, depth_error = await send_async(http_sink.SINK, settings, bad_text, too_deep)
    assert isinstance(text_error, PermanentError)
    assert "not valid Unicode" in str(text_error)
    assert isinstance(depth_error, PermanentError)
    assert "nested too deeply" in str(depth_error)
    assert route.call_count == 0


@pytest.mark.anyio
async def test_sql_parameter_that_is_not_unicode_is_the_messages_permanent_error(
    db: Database,
) -> None:
    """The sql sink (SQLite and PostgreSQL): a parameter holding a lone surrogate, or a JSON
    parameter nested too deep, is the message's PermanentError; no row is written."""
    settings = settings_for(db.url)
    sql = "INSERT INTO users (clerk_id, email) VALUES (:id, :email)"
    async with open_sink(settings) as sink:
        with pytest.raises(PermanentError, match=r"not valid Unicode .*'\\ud800'"):
            await sink.send(sql_message({"sql": sql, "params": {"id": "u1", "email": LONE}}))
        with pytest.raises(PermanentError, match="nested too deeply"):
            await sink.send(
                sql_message({"sql": sql, "params": {"id": "u1", "email": deep(100_000)}})
            )
    assert db.query("SELECT count(*) FROM users") == [(0,)]
