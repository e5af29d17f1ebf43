"""Fuzzing every source: arbitrary requests are only ever a VerificationError (a 4xx through HTTP),
never another exception, and store nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import deepjson
from relay.errors import VerificationError
from tests.conftest import TEST_SECRET
from tests.sources.helpers import (
    HMAC_SECRET,
    KLAVIYO_SECRET,
    KLAVIYO_WEBHOOK_ID,
    NOW,
    Relay,
    build,
    klaviyo_headers,
    mac,
    running,
)

HEADER_NAMES = [
    "svix-id", "svix-timestamp", "svix-signature", "webhook-id", "webhook-timestamp",
    "webhook-signature", "klaviyo-webhook-id", "klaviyo-timestamp", "klaviyo-signature",
    "x-signature", "x-timestamp", "x-event-id", "x-topic", "content-type",
]  # fmt: skip
header_value = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=70),
    st.integers().map(str),
    st.sampled_from(["sha256=", "v1,AAAA", "v1,", str(NOW), KLAVIYO_WEBHOOK_ID, "W"]),
    st.binary(max_size=10),  # a broken caller passing bytes
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    _containers,
    max_leaves=20,
)
klaviyo_like = st.fixed_dictionaries(
    {
        "meta": st.one_of(json_values, st.just({"klaviyo_webhook_id": "W"})),
        "data": st.one_of(
            json_values,
            st.lists(
                st.one_of(
                    json_values,
                    st.fixed_dictionaries(
                        {"external_id": json_values, "topic": json_values, "payload": json_values}
                    ),
                ),
                max_size=4,
            ),
        ),
    }
)
any_body = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    klaviyo_like.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 50_000 + b"]" * 50_000),
)
FUZZED: dict[str, dict[str, Any]] = {
    "svix": {"secret": TEST_SECRET},
    "standard-webhooks": {"secret": TEST_SECRET},
    "hmac": {
        "secret": HMAC_SECRET,
        "signature_header": "X-Signature",
        "signed": "{timestamp}.{body}",
        "timestamp_header": "X-Timestamp",
        "id_header": "X-Event-Id",
        "type_header": "X-Topic",
    },
    "klaviyo": {"secret": KLAVIYO_SECRET},
}
SOURCES = {name: build(name, **fields) for name, fields in FUZZED.items()}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SOURCES)),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=8),
    body=any_body,
)
def test_unsigned_garbage_is_only_ever_a_verification_error(
    name: str, headers: dict[str, Any], body: bytes
) -> None:
    """Arbitrary headers and bodies never verify and never raise anything but VerificationError."""
    with pytest.raises(VerificationError):
        SOURCES[name].verify(body, headers)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["hmac", "klaviyo"]),
    body=any_body,
    event_id=header_value,
    topic=header_value,
    webhook_id=st.sampled_from(["W", KLAVIYO_WEBHOOK_ID]),
)
def test_signed_arbitrary_bodies_are_events_or_verification_errors(
    name: str, body: bytes, event_id: Any, topic: Any, webhook_id: str
) -> None:
    """Correctly signed arbitrary bodies (and ids, topics), however deeply nested, give events
    whose stored body decodes to their envelope, or a VerificationError; never another
    exception."""
    ts = str(NOW)
    if name == "klaviyo":
        headers: dict[str, Any] = klaviyo_headers(body=body, ts=ts, webhook_id=webhook_id)
    else:
        signature = mac(HMAC_SECRET, ts.encode() + b"." + body, "hex")
        headers = {"X-Signature": signature, "X-Timestamp": ts, "X-Event-Id": event_id,
                   "X-Topic": topic}  # fmt: skip
    try:
        events = SOURCES[name].verify(body, headers)
    except VerificationError:
        return
    for event in events:
        # compared as text: == on values nested 50,000 deep would recurse too
        assert deepjson.dumps(deepjson.loads(event.body)) == deepjson.dumps(event.event)
        assert event.event["type"] == event.type
        assert event.message_id


@pytest.fixture(scope="module")
def http_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Relay]]:
    """One in-process relay over every source type, driven synchronously for hypothesis."""
    runner = asyncio.Runner()
    context = running(tmp_path_factory.mktemp("fuzz"), NOW)
    relay = runner.run(context.__aenter__())
    try:
        yield runner, relay
    finally:
        runner.run(context.__aexit__(None, None, None))
        runner.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(
        ["/webhooks/clerk", "/webhooks/partner", "/webhooks/shop", "/webhooks/klaviyo"]
    ),
    headers=st.dictionaries(
        st.sampled_from([*HEADER_NAMES, "x-shop-hmac", "x-shop-webhook-id", "x-shop-topic"]),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
        max_size=8,
    ),
    body=any_body,
)
def test_ingest_answers_unsigned_garbage_with_4xx_and_stores_nothing(
    http_harness: tuple[Any, Relay], path: str, headers: dict[str, str], body: bytes
) -> None:
    """Through HTTP, every source answers arbitrary requests with a 4xx, never a 5xx, and stores
    nothing."""
    runner, relay = http_harness
    response = runner.run(relay.post(path, body, headers))
    assert 400 <= response.status_code < 500, response.text
    assert relay.events() == []
