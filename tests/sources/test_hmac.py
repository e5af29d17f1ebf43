"""The hmac source: a documented vector, every signing scheme, timestamps, ids and types from
headers or body fields, malformed signatures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.errors import EventShapeError
from relay.sources.base import Source
from tests.sources.helpers import HMAC_SECRET, NOW, ORDER, build, mac, rejected


def test_hmac_accepts_githubs_documented_vector() -> None:
    """GitHub's published example (secret "It's a Secret to Everybody", body "Hello, World!")
    passes the signature check; the body is not JSON, so it is a 400 for the shape."""
    source = build(
        "hmac",
        secret="It's a Secret to Everybody",
        signature_header="X-Hub-Signature-256",
        signature_prefix="sha256=",
        id_header="X-GitHub-Delivery",
        type_header="X-GitHub-Event",
    )
    headers = {
        "X-Hub-Signature-256": "sha256="
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "ping",
    }
    error = rejected(source, b"Hello, World!", headers)
    assert isinstance(error, EventShapeError)
    assert str(error) == "body is not valid JSON"
    assert str(rejected(source, b"Hello, World?", headers)) == "no matching signature"


HMAC_SCHEMES = [
    # encoding, prefix, signed, how the test builds the signed bytes (independently)
    ("hex", "", "{body}", lambda body, ts, mid: body),
    ("hex", "sha256=", "{body}", lambda body, ts, mid: body),
    ("base64", "", "{body}", lambda body, ts, mid: body),
    ("base64", "sha256=", "{body}", lambda body, ts, mid: body),
    ("hex", "", "{timestamp}.{body}", lambda body, ts, mid: ts + b"." + body),
    ("hex", "v0=", "v0:{timestamp}:{body}", lambda body, ts, mid: b"v0:" + ts + b":" + body),
    ("base64", "", "{body}{timestamp}", lambda body, ts, mid: body + ts),
    ("hex", "", "{id}.{timestamp}.{body}", lambda body, ts, mid: mid + b"." + ts + b"." + body),
]


@pytest.mark.parametrize(("encoding", "prefix", "signed", "content"), HMAC_SCHEMES)
def test_hmac_schemes(encoding: str, prefix: str, signed: str, content: Any) -> None:
    """Each signed-content layout, encoding and prefix verifies exactly what it says; the same
    digest over another layout (or without the prefix) does not."""
    fields: dict[str, Any] = {
        "secret": HMAC_SECRET,
        "signature_header": "X-Signature",
        "encoding": encoding,
        "signature_prefix": prefix,
        "signed": signed,
        "id_header": "X-Event-Id",
    }
    if "{timestamp}" in signed:
        fields["timestamp_header"] = "X-Timestamp"
    source = build("hmac", **fields)
    ts, mid = str(NOW).encode(), b"evt_42"
    signature = prefix + mac(HMAC_SECRET, content(ORDER, ts, mid), encoding)
    headers = {"X-Signature": signature, "X-Timestamp": ts.decode(), "X-Event-Id": "evt_42"}
    [event] = source.verify(ORDER, headers)
    assert (event.message_id, event.type) == ("evt_42", "order.paid")
    if signed != "{body}":
        wrong = prefix + mac(HMAC_SECRET, ORDER, encoding)
        assert str(rejected(source, ORDER, {**headers, "X-Signature": wrong})) == (
            "no matching signature"
        )
    if prefix:
        bare = signature.removeprefix(prefix)
        assert str(rejected(source, ORDER, {**headers, "X-Signature": bare})) == (
            f"x-signature header does not start with '{prefix}'"
        )


def timed_source(**extra: Any) -> Source:
    return build(
        "hmac",
        secret=HMAC_SECRET,
        signature_header="X-Signature",
        signed="{timestamp}.{body}",
        timestamp_header="X-Timestamp",
        id_field="id",
        **extra,
    )


def timed(ts: str, body: bytes = ORDER) -> dict[str, str]:
    return {"X-Timestamp": ts, "X-Signature": mac(HMAC_SECRET, ts.encode() + b"." + body, "hex")}


@pytest.mark.parametrize(
    ("skew", "outcome"),
    [(-301, "timestamp too old"), (-300, None), (300, None), (301, "timestamp in the future")],
)
def test_hmac_timestamp_tolerance_edges(skew: int, outcome: str | None) -> None:
    """A signed Unix timestamp within ±tolerance_s (default 300) passes; one second more fails."""
    headers = timed(str(NOW + skew))
    if outcome is None:
        assert timed_source().verify(ORDER, headers)[0].message_id == "ord_1"
    else:
        assert str(rejected(timed_source(), ORDER, headers)) == outcome


def test_hmac_timestamp_without_tolerance_is_only_signed() -> None:
    """With tolerance_s: null the timestamp can be any text (it is still signed), and age is not
    checked; with a tolerance it must be Unix seconds."""
    date = "Tue, 14 Apr 2026 03:50:12 GMT"
    assert timed_source(tolerance_s=None).verify(ORDER, timed(date))[0].type == "order.paid"
    assert str(rejected(timed_source(), ORDER, timed(date))) == (
        "x-timestamp header is not an integer"
    )
    assert str(rejected(timed_source(tolerance_s=None), ORDER, timed("caf\u00e9"))) == (
        "x-timestamp header has invalid characters"
    )
    assert str(rejected(timed_source(), ORDER, timed("12.5"))) == (
        "x-timestamp header is not an integer"
    )
    old = timed(str(NOW - 86_400))
    assert timed_source(tolerance_s=None).verify(ORDER, old)[0].message_id == "ord_1"


def test_hmac_id_and_type_from_headers_or_body_fields() -> None:
    """id and type come from a header or a dotted path in the body; the stored envelope is
    {"type", "id", "data": the body as sent}, so templates read the body under `data`."""
    signature = {"X-Signature": mac(HMAC_SECRET, ORDER, "hex")}
    nested = build(
        "hmac",
        secret=HMAC_SECRET,
        signature_header="X-Signature",
        id_field="data.object.id",
        type_header="X-Topic",
    )
    [event] = nested.verify(ORDER, {**signature, "X-Topic": "payments/paid"})
    assert (event.message_id, event.type) == ("pay_9", "payments/paid")
    assert event.event == {"type": "payments/paid", "id": "pay_9", "data": json.loads(ORDER)}
    assert json.loads(event.body) == event.event

    defaults = build("hmac", secret=HMAC_SECRET, signature_header="X-Signature", id_field="id")
    assert defaults.verify(ORDER, signature)[0].type == "order.paid"  # type_field defaults to type

    error = rejected(nested, ORDER, signature)
    assert (str(error), isinstance(error, EventShapeError)) == (
        "X-Topic header is missing or not a string",
        True,
    )
    body = b'{"data": {"object": {}}}'
    error = rejected(nested, body, {"X-Signature": mac(HMAC_SECRET, body, "hex"), "X-Topic": "t"})
    assert str(error) == "body.data.object.id is missing or not a string"


def test_hmac_rejects_malformed_signatures_without_revealing_anything() -> None:
    """Wrong encodings and lengths are 400s whose reasons hold no secret and no expected digest."""
    source = build("hmac", secret=HMAC_SECRET, signature_header="X-Signature", id_field="id")
    expected = mac(HMAC_SECRET, ORDER, "hex")
    for signature, reason in [
        ("zz" * 32, "x-signature header is not a hex digest"),
        (expected[:-2], "x-signature header is not a hex digest"),
        ("", "empty x-signature header"),
        ("a" * 2000, "x-signature header too long"),
    ]:
        text = str(rejected(source, ORDER, {"X-Signature": signature}))
        assert text == reason
        assert HMAC_SECRET not in text
        assert expected not in text
    assert str(rejected(source, ORDER, {})) == "missing x-signature header"
    upper = expected.upper()
    assert source.verify(ORDER, {"x-signature": upper})[0].message_id == "ord_1"
