"""The klaviyo source: the signed content, a batch as several events, its checks and errors."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from relay.errors import EventShapeError
from relay.sources import klaviyo
from relay.sources.base import Source
from tests.sources.helpers import (
    KLAVIYO_BATCH,
    KLAVIYO_SECRET,
    KLAVIYO_TOPICS,
    KLAVIYO_TS,
    NOW,
    build,
    klaviyo_headers,
    rejected,
)

# Self-made, not published by Klaviyo: HMAC-SHA256(key=secret, body + Klaviyo-Timestamp), hex.
# It pins relay.sources.klaviyo.signed_content; see its docstring for where the layout comes from.
KLAVIYO_SIGNATURE = "4462aba14d916f388b45781bffee8f491cc7b406cef8b0f5dda8de1a6c26e74b"


def http_date(unix: float) -> str:
    return email.utils.formatdate(unix, usegmt=True)


def klaviyo_source(now: float = int(KLAVIYO_TS), **extra: Any) -> Source:
    return build("klaviyo", now=now, secret=KLAVIYO_SECRET, **extra)


def test_klaviyo_signed_content_is_pinned() -> None:
    """The signed content is the raw body followed by the Klaviyo-Timestamp value, keyed by the
    secret's bytes, hex: the pinned vector, recomputed here without relay's code."""
    assert klaviyo.signed_content(KLAVIYO_BATCH, KLAVIYO_TS) == KLAVIYO_BATCH + KLAVIYO_TS.encode()
    assert klaviyo_headers()["Klaviyo-Signature"] == KLAVIYO_SIGNATURE
    independent = hmac.new(
        KLAVIYO_SECRET.encode(), KLAVIYO_BATCH + KLAVIYO_TS.encode(), hashlib.sha256
    )
    assert independent.hexdigest() == KLAVIYO_SIGNATURE


def test_klaviyo_batch_of_three_is_three_events() -> None:
    """Each data[] item is its own event: id external_id, type topic, envelope with the payload
    under `data` and the batch's meta; its stored body is that envelope."""
    headers = {**klaviyo_headers(), "Klaviyo-Signature": KLAVIYO_SIGNATURE}
    events = klaviyo_source().verify(KLAVIYO_BATCH, headers)
    assert [(e.message_id, e.type) for e in events] == list(
        zip(["7Xk2aQ", "7Xk2aR", "7Xk2aS"], KLAVIYO_TOPICS, strict=True)
    )
    doc = json.loads(KLAVIYO_BATCH)
    for event, item in zip(events, doc["data"], strict=True):
        assert event.event == {
            "type": item["topic"],
            "id": item["external_id"],
            "data": item["payload"],
            "meta": doc["meta"],
        }
        assert json.loads(event.body) == event.event


def test_klaviyo_rejects_a_webhook_id_that_does_not_match_meta() -> None:
    """meta.klaviyo_webhook_id must equal the Klaviyo-Webhook-Id header, even when signed."""
    error = rejected(klaviyo_source(), KLAVIYO_BATCH, klaviyo_headers(webhook_id="01OTHER"))
    assert str(error) == "meta.klaviyo_webhook_id does not match the klaviyo-webhook-id header"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (klaviyo_headers(secret="another-secret-0123456789"), "no matching signature"),
        (klaviyo_headers(body=KLAVIYO_BATCH + b" "), "no matching signature"),
        ({**klaviyo_headers(), "Klaviyo-Timestamp": str(int(KLAVIYO_TS) + 1)},
         "no matching signature"),
        ({**klaviyo_headers(), "Klaviyo-Signature": "sha256=" + KLAVIYO_SIGNATURE},
         "klaviyo-signature header is not a hex HMAC-SHA256"),
        ({**klaviyo_headers(), "Klaviyo-Signature": base64.b64encode(b"x" * 32).decode()},
         "klaviyo-signature header is not a hex HMAC-SHA256"),
        ({k: v for k, v in klaviyo_headers().items() if k != "Klaviyo-Webhook-Id"},
         "missing klaviyo-webhook-id header"),
        ({k: v for k, v in klaviyo_headers().items() if k != "Klaviyo-Timestamp"},
         "missing klaviyo-timestamp header"),
        ({**klaviyo_headers(), "Klaviyo-Timestamp": ""}, "empty klaviyo-timestamp header"),
    ],
)  # fmt: skip
def test_klaviyo_bad_signatures_are_rejected(headers: dict[str, str], reason: str) -> None:
    """Another secret, a changed byte or timestamp, a mangled or missing header: all 400s."""
    error = rejected(klaviyo_source(), KLAVIYO_BATCH, headers)
    assert str(error) == reason
    assert not isinstance(error, EventShapeError)
    assert KLAVIYO_SECRET not in reason
    assert KLAVIYO_SIGNATURE not in reason


@pytest.mark.parametrize(
    ("ts", "outcome"),
    [
        (str(NOW - 301), "timestamp too old"),
        (str(NOW - 300), None),
        (str(NOW + 300), None),
        (str(NOW + 301), "timestamp in the future"),
        (str((NOW - 301) * 1000), "timestamp too old"),  # milliseconds
        (str((NOW + 120) * 1000), None),
        (http_date(NOW), None),  # Klaviyo's own example sends an HTTP date
        (http_date(NOW - 300), None),
        (http_date(NOW - 301), "timestamp too old"),
        (http_date(NOW + 301), "timestamp in the future"),
        ("Tue, 16 Jan 2024 14:23:50 GMT", "timestamp too old"),  # January 2024, replayed
        (datetime.fromtimestamp(NOW - 60, UTC).isoformat(), None),
        (datetime.fromtimestamp(NOW - 301, UTC).isoformat(), "timestamp too old"),
        ("Tue, 16 Jan 2024 14:23:50", "klaviyo-timestamp header is not a Unix time or an HTTP"
         " date (with its zone)"),
        ("yesterday", "klaviyo-timestamp header is not a Unix time or an HTTP date (with its"
         " zone)"),
    ],
)  # fmt: skip
def test_klaviyo_timestamp_window_applies_to_every_form(ts: str, outcome: str | None) -> None:
    """Klaviyo-Timestamp must be within tolerance_s (300) of now, as Unix seconds or
    milliseconds, an HTTP date (Klaviyo's example) or ISO 8601; a form whose age cannot be told
    is refused."""
    headers = klaviyo_headers(ts=ts)
    if outcome is None:
        assert len(klaviyo_source(now=NOW).verify(KLAVIYO_BATCH, headers)) == 3
    else:
        assert str(rejected(klaviyo_source(now=NOW), KLAVIYO_BATCH, headers)) == outcome


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not valid JSON"),
        (b"[]", "body is not a JSON object"),
        (b'{"data": []}', "body has no meta.klaviyo_webhook_id"),
        (b'{"meta": {"klaviyo_webhook_id": "W"}}', "body has no data list"),
        (b'{"meta": {"klaviyo_webhook_id": "W"}, "data": [7]}', "data[0] is not an object"),
        (
            b'{"meta": {"klaviyo_webhook_id": "W"}, "data": [{"topic": "t", "payload": {}}]}',
            "data[0].external_id is missing or not a string",
        ),
        (
            b'{"meta": {"klaviyo_webhook_id": "W"}, "data": [{"external_id": "e", "payload": {}}]}',
            "data[0].topic is missing or not a string",
        ),
        (
            b'{"meta": {"klaviyo_webhook_id": "W"}, "data": [{"external_id": "e", "topic": "t"}]}',
            "data[0].payload is not an object",
        ),
    ],
)
def test_klaviyo_signed_but_malformed_bodies_are_shape_errors(body: bytes, reason: str) -> None:
    """A signed body that is not a Klaviyo batch is a 400 that says what is wrong."""
    headers = klaviyo_headers(body=body, webhook_id="W")
    error = rejected(klaviyo_source(), body, headers)
    assert (str(error), isinstance(error, EventShapeError)) == (reason, True)


def test_klaviyo_empty_batch_is_no_events() -> None:
    """A signed batch with no items is valid and yields nothing."""
    body = b'{"data": [], "meta": {"klaviyo_webhook_id": "W"}}'
    assert klaviyo_source().verify(body, klaviyo_headers(body=body, webhook_id="W")) == []
