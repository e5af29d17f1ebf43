"""Specification of inbound sources (relay.sources): a test vector for every source type, their
settings in rules.yaml (located errors), batched ingest with deduplication, and fuzzing.

Every bad input is a VerificationError (EventShapeError when the signature is good but the body is
not what the source expects): ingest answers it with a 400, never anything else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from relay.cli import main
from relay.config import Config, load_config
from relay.errors import ConfigError, EventShapeError, StoreUnavailableError, VerificationError
from relay.ingest import IngestEndpoint
from relay.secret import Secret
from relay.sources import klaviyo
from relay.sources.base import InboundEvent, Source, SourceContext, load_source_types
from relay.sources.signing import sign as svix_sign
from relay.store.base import IngestOutcome, NewDelivery, NewEvent
from relay.store.sqlite import SQLiteStore
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET

NOW = 1_800_000_000
TYPES = load_source_types()
EXAMPLE = ROOT / "examples" / "resend-bounces"


def build(type_name: str, now: float = NOW, **fields: Any) -> Source:
    """A ready source of ``type_name`` with these settings and a frozen clock."""
    source_type = TYPES[type_name]
    config = source_type.settings.model_validate({"path": "/in", "verify": type_name, **fields})
    return source_type.build(config, SourceContext(clock=lambda: float(now)))


def rejected(source: Source, body: bytes, headers: Mapping[str, object]) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        source.verify(body, headers)  # type: ignore[arg-type]
    return info.value


def test_built_in_source_types_are_registered() -> None:
    """The four built-ins come from the relay.sources entry-point group, like any plugin."""
    assert sorted(TYPES) == ["hmac", "klaviyo", "standard-webhooks", "svix"]
    assert [name for name, t in TYPES.items() if t.batches] == ["klaviyo"]


# --- svix --------------------------------------------------------------------------------------

# Svix's documented test vectors (FACTS.md section 1), byte for byte. Their bodies are not events.
SVIX_VECTORS = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_plJ3nmyCDGBKInavdOK15jsl",
        "msg_loFOjxBNrRLzqYUf",
        1731705121,
        b'{"event_type":"ping","data":{"success":true}}',
        "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
    ),
]
CLERK_EVENT = b'{"type":"user.created","object":"event","data":{"id":"user_1"}}'


def svix_headers(msg_id: str, ts: int, signature: str, prefix: str = "svix") -> dict[str, str]:
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(ts),
        f"{prefix}-signature": signature,
    }


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "signature"), SVIX_VECTORS)
def test_svix_accepts_svix_documented_vectors(
    secret: str, msg_id: str, ts: int, body: bytes, signature: str
) -> None:
    """Svix's vectors pass the signature check (clock frozen at their time); their bodies have no
    event type, so what is left is a 400 for the shape, not for the signature."""
    source = build("svix", now=ts, secret=secret)
    error = rejected(source, body, svix_headers(msg_id, ts, signature))
    assert isinstance(error, EventShapeError)
    assert (str(error), error.reason) == ("event has no 'type'", "no_type")
    forged = signature[:-6] + "AAAAA="
    assert str(rejected(source, body, svix_headers(msg_id, ts, forged))) == "no matching signature"


def test_svix_event_is_the_body_with_the_svix_id() -> None:
    """A Clerk event signed by the svix library is one event: id svix-id, type from the body,
    stored as the raw bytes."""
    signature = SvixWebhook(TEST_SECRET).sign(
        "msg_1", datetime.fromtimestamp(NOW, UTC), CLERK_EVENT.decode()
    )
    source = build("svix", secret=TEST_SECRET)
    [event] = source.verify(CLERK_EVENT, svix_headers("msg_1", NOW, signature))
    assert event == InboundEvent("msg_1", "user.created", json.loads(CLERK_EVENT), CLERK_EVENT)


def test_svix_accepts_the_previous_secret_and_webhook_headers() -> None:
    """During a rotation either secret verifies; webhook-* header names are read too."""
    old = "whsec_plJ3nmyCDGBKInavdOK15jsl"
    source = build("svix", secret=TEST_SECRET, previous_secret=old)
    signature = svix_sign(Secret(old), "msg_2", NOW, CLERK_EVENT)
    for prefix in ("svix", "webhook"):
        [event] = source.verify(CLERK_EVENT, svix_headers("msg_2", NOW, signature, prefix))
        assert event.message_id == "msg_2"


# --- standard-webhooks -------------------------------------------------------------------------


def test_standard_webhooks_accepts_the_vector_under_webhook_headers_only() -> None:
    """The same scheme under webhook-* names: Svix's vector passes the signature check; the same
    request with svix-* names is refused, since a Standard Webhooks sender never sends them."""
    secret, msg_id, ts, body, signature = SVIX_VECTORS[0]
    source = build("standard-webhooks", now=ts, secret=secret)
    error = rejected(source, body, svix_headers(msg_id, ts, signature, "webhook"))
    assert isinstance(error, EventShapeError)
    error = rejected(source, body, svix_headers(msg_id, ts, signature, "svix"))
    assert str(error) == "missing webhook-id header"
    assert not isinstance(error, EventShapeError)


def test_standard_webhooks_event_signed_by_the_reference_library() -> None:
    """An event signed by the standardwebhooks library verifies; a bare base64 secret (without
    whsec_), as some senders show it, is the same key."""
    bare = TEST_SECRET.removeprefix("whsec_")
    signature = StandardWebhook(bare).sign(
        "msg_sw", datetime.fromtimestamp(NOW, UTC), CLERK_EVENT.decode()
    )
    for secret in (TEST_SECRET, bare):
        source = build("standard-webhooks", secret=secret)
        [event] = source.verify(CLERK_EVENT, svix_headers("msg_sw", NOW, signature, "webhook"))
        assert (event.message_id, event.type, event.body) == ("msg_sw", "user.created", CLERK_EVENT)


# --- hmac --------------------------------------------------------------------------------------

HMAC_SECRET = "hmac-test-secret-0123456789"
ORDER = b'{"id":"ord_1","type":"order.paid","data":{"object":{"id":"pay_9","amount":1200}}}'


def mac(secret: str, message: bytes, encoding: str) -> str:
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


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


# --- klaviyo -----------------------------------------------------------------------------------

KLAVIYO_SECRET = "klaviyo-endpoint-secret-0123"
KLAVIYO_WEBHOOK_ID = "01J9ZKQ4W7V6Y3T2S1R0P9N8M7"
KLAVIYO_TS = "1795437923"
KLAVIYO_BATCH = (
    b'{"data":['
    b'{"external_id":"7Xk2aQ","topic":"event:klaviyo.received_email","payload":{"data":{"id":'
    b'"7Xk2aQ","type":"event","attributes":{"event_properties":{"email_address":"ada@example.com"'
    b"}}}}},"
    b'{"external_id":"7Xk2aR","topic":"event:klaviyo.clicked_email","payload":{"data":{"id":'
    b'"7Xk2aR","type":"event","attributes":{"event_properties":{"email_address":"grace@example.'
    b'com"}}}}},'
    b'{"external_id":"7Xk2aS","topic":"event:klaviyo.marked_email_as_spam","payload":{"data":{"id'
    b'":"7Xk2aS","type":"event","attributes":{"event_properties":{"email_address":"alan@example.'
    b'com"}}}}}'
    b'],"meta":{"klaviyo_account_id":"AbC123","klaviyo_webhook_id":"01J9ZKQ4W7V6Y3T2S1R0P9N8M7",'
    b'"timestamp":"2026-11-17T12:45:23.000000+00:00"}}'
)
# Self-made, not published by Klaviyo: HMAC-SHA256(key=secret, body + Klaviyo-Timestamp), hex.
# It pins relay.sources.klaviyo.signed_content; see its docstring for where the layout comes from.
KLAVIYO_SIGNATURE = "4462aba14d916f388b45781bffee8f491cc7b406cef8b0f5dda8de1a6c26e74b"
KLAVIYO_TOPICS = [
    "event:klaviyo.received_email",
    "event:klaviyo.clicked_email",
    "event:klaviyo.marked_email_as_spam",
]


def klaviyo_headers(
    body: bytes = KLAVIYO_BATCH,
    ts: str = KLAVIYO_TS,
    webhook_id: str = KLAVIYO_WEBHOOK_ID,
    secret: str = KLAVIYO_SECRET,
) -> dict[str, str]:
    return {
        "Klaviyo-Webhook-Id": webhook_id,
        "Klaviyo-Timestamp": ts,
        "Klaviyo-Signature": klaviyo.sign(Secret(secret), body, ts),
    }


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
        ("Sat, 01 Jan 2000 00:00:00 GMT", None),  # not Unix time: signed, but no window
        ("2000-01-01T00:00:00+00:00", None),
    ],
)
def test_klaviyo_timestamp_window_applies_to_unix_times(ts: str, outcome: str | None) -> None:
    """A Unix Klaviyo-Timestamp (seconds, or milliseconds) must be within tolerance_s (300);
    another format is signed but its age is not checked (deduplication stops replays)."""
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


# --- rules.yaml: sources validated by their type, with located errors ------------------------

RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
  partner:
    path: /webhooks/partner
    verify: standard-webhooks
    secret: ${PARTNER_SECRET}
  shop:
    path: /webhooks/shop
    verify: hmac
    secret: ${SHOP_SECRET}
    signature_header: X-Shop-Hmac
    encoding: base64
    id_header: X-Shop-Webhook-Id
    type_header: X-Shop-Topic
  klaviyo:
    path: /webhooks/klaviyo
    verify: klaviyo
    secret: ${KLAVIYO_SECRET}
sinks:
  received:
    type: http
    url: http://127.0.0.1:9/received
  clicked:
    type: http
    url: http://127.0.0.1:9/clicked
  spam:
    type: http
    url: http://127.0.0.1:9/spam
rules:
  - name: received
    events: event:klaviyo.received_email
    send:
      - sink: received
  - name: clicked
    events: event:klaviyo.clicked_email
    send:
      - sink: clicked
  - name: spam
    events: [event:klaviyo.marked_email_as_spam, user.created]
    send:
      - sink: spam
"""
ENV = {
    **TEST_ENV,
    "PARTNER_SECRET": "whsec_plJ3nmyCDGBKInavdOK15jsl",
    "SHOP_SECRET": "shop-secret-0123456789abcdef",
    "KLAVIYO_SECRET": KLAVIYO_SECRET,
}


def write(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return path


def diagnostics(
    tmp_path: Path, rules: str, env: Mapping[str, str] = ENV, mode: str = "serve"
) -> list[str]:
    path = write(tmp_path, rules)
    try:
        config = load_config(path, tmp_path / "templates", env=env, mode=mode)  # type: ignore[arg-type]
    except ConfigError as exc:
        return [str(d).replace(str(tmp_path) + "/", "") for d in exc.diagnostics]
    return [str(d).replace(str(tmp_path) + "/", "") for d in config.warnings]


def load(tmp_path: Path, rules: str = RULES, env: Mapping[str, str] = ENV) -> Config:
    return load_config(write(tmp_path, rules), tmp_path / "templates", env=env)


def test_every_source_type_loads_from_rules_yaml(tmp_path: Path) -> None:
    """Each source's verify: names its type; its settings are that type's model; every secret is
    known for redaction and never shows in the config's repr."""
    config = load(tmp_path)
    assert {n: s.type.name for n, s in config.sources.items()} == {
        "clerk": "svix",
        "partner": "standard-webhooks",
        "shop": "hmac",
        "klaviyo": "klaviyo",
    }
    assert config.warnings == ()
    for key in ("CLERK_WEBHOOK_SIGNING_SECRET", "PARTNER_SECRET", "SHOP_SECRET", "KLAVIYO_SECRET"):
        assert ENV[key] in config.secret_values
        assert ENV[key] not in repr(config)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}\n",
            "    secrt: ${CLERK_WEBHOOK_SIGNING_SECRET}\n",
            [
                "rules.yaml:3:3: missing required key 'secret'",
                "rules.yaml:5:5: unknown key 'secrt' (did you mean 'secret'?)",
            ],
        ),
        (
            "verify: klaviyo",
            "verify: klavio",
            ["rules.yaml:20:13: unknown source type 'klavio' (did you mean 'klaviyo'?)"],
        ),
        (
            "verify: hmac",
            "verify: shopify",
            [
                "rules.yaml:12:13: unknown source type 'shopify' (one of: hmac, klaviyo, "
                "standard-webhooks, svix)"
            ],
        ),
        (
            "verify: hmac",
            "verify: [hmac]",
            [
                "rules.yaml:12:13: verify: name a source type (one of: hmac, klaviyo, "
                "standard-webhooks, svix)"
            ],
        ),
        (
            "    encoding: base64\n",
            "    encodng: base64\n",
            ["rules.yaml:15:5: unknown key 'encodng' (did you mean 'encoding'?)"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base32\n",
            ["rules.yaml:15:15: encoding: Input should be 'hex' or 'base64'"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    signed: '{timestamp}.{body}'\n",
            [
                "rules.yaml:11:5: signed must use {timestamp} exactly when timestamp_header is "
                "set (an unsigned timestamp proves nothing)"
            ],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    signed: '{body}.{nonce}'\n",
            ["rules.yaml:16:13: signed: unknown placeholder {nonce} (use body, timestamp or id)"],
        ),
        (
            "    id_header: X-Shop-Webhook-Id\n",
            "",
            ["rules.yaml:11:5: set where the event id comes from: id_header or id_field (one)"],
        ),
        (
            "    encoding: base64\n",
            "    encoding: base64\n    tolerance_s: 60\n",
            ["rules.yaml:11:5: tolerance_s needs a timestamp_header"],
        ),
        (
            "    path: /webhooks/klaviyo\n",
            "    path: /webhooks/shop\n",
            ["rules.yaml:19:11: path /webhooks/shop is already served by source 'shop'"],
        ),
        (
            "    path: /webhooks/klaviyo\n",
            "    path: /metrics\n",
            ["rules.yaml:19:11: path /metrics is reserved for relay itself"],
        ),
        (
            "    verify: klaviyo\n",
            "    verify: klaviyo\n    tolerance_s: 0\n",
            ["rules.yaml:21:18: tolerance_s: Input should be greater than or equal to 1"],
        ),
    ],
)
def test_source_errors_are_located(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    """Source mistakes are reported like sink ones: rules.yaml:LINE:COL: message, with hints."""
    assert old in RULES
    assert diagnostics(tmp_path, RULES.replace(old, new, 1)) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CLERK_WEBHOOK_SIGNING_SECRET", "not-a-secret-value",
         "rules.yaml:5:13: secret: signing secret must start with 'whsec_' (copy it from the "
         "Clerk dashboard: Webhooks → endpoint → Signing Secret)"),
        ("PARTNER_SECRET", "whsec_c2hvcnQ=",
         "rules.yaml:9:13: secret: signing secret is too short (5 bytes; expected at least 16, "
         "Clerk's are 24)"),
        ("SHOP_SECRET", "'shop-secret-0123456789abcdef'",
         "rules.yaml:13:13: secret: secret is wrapped in quotes; remove the quotes"),
        ("KLAVIYO_SECRET", "tooshort-secret",
         "rules.yaml:21:13: secret: secret is too short (15 characters; expected at least 16)"),
    ],
)  # fmt: skip
def test_bad_secrets_are_located_and_never_shown(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """Each type checks its secret at load and says what is wrong without quoting it."""
    assert diagnostics(tmp_path, RULES, env={**ENV, key: value}) == [message]
    assert value.strip("'") not in message


def test_unset_source_variables_by_mode(tmp_path: Path) -> None:
    """An unset secret: a warning for check, an error for serve and for dry-run (verification
    stays on); a misspelt key whose value is unset is still reported in check."""
    env = {k: v for k, v in ENV.items() if k != "KLAVIYO_SECRET"}
    message = "rules.yaml:21:13: {}environment variable KLAVIYO_SECRET is not set"
    assert diagnostics(tmp_path, RULES, env, "check") == [message.format("warning: ")]
    assert diagnostics(tmp_path, RULES, env, "serve") == [message.format("")]
    assert diagnostics(tmp_path, RULES, env, "dry-run") == [message.format("")]
    typo = RULES.replace("    secret: ${KLAVIYO_SECRET}", "    secrt: ${KLAVIYO_SECRET}")
    assert diagnostics(tmp_path, typo, env, "check") == [
        "rules.yaml:18:3: missing required key 'secret'",
        "rules.yaml:21:12: warning: environment variable KLAVIYO_SECRET is not set",
        "rules.yaml:21:5: unknown key 'secrt' (did you mean 'secret'?)",
    ]


def test_check_config_with_unset_secret_knows_the_source_is_incomplete(tmp_path: Path) -> None:
    """Under check, a source whose secret is unset is kept (for the summary) but marked
    incomplete; ingest answers it 503 instead of building a verifier without a key."""
    env = {k: v for k, v in ENV.items() if k != "KLAVIYO_SECRET"}
    config = load_config(write(tmp_path, RULES), tmp_path / "templates", env=env, mode="check")
    assert not config.sources["klaviyo"].complete
    assert config.sources["shop"].complete


def test_event_pattern_warnings_know_each_senders_types(tmp_path: Path) -> None:
    """A svix source knows Clerk's and Resend's event types (no warning for email.bounced);
    a source with open-ended types (hmac, klaviyo, ...) turns the typo warning off."""
    only_svix = textwrap.dedent("""\
        version: 1
        sources:
          resend:
            path: /webhooks/resend
            secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
        sinks:
          hook:
            type: http
            url: http://127.0.0.1:9/x
        rules:
          - name: bounces
            events: [email.bounced, email.complained, user.create]
            send:
              - sink: hook
        """)
    assert diagnostics(tmp_path, only_svix) == [
        "rules.yaml:12:47: warning: event pattern 'user.create' matches no known Clerk event "
        "type (did you mean 'user.created'?)"
    ]
    with_klaviyo = only_svix.replace(
        "sinks:",
        "  klaviyo:\n    path: /k\n    verify: klaviyo\n    secret: ${KLAVIYO_SECRET}\nsinks:",
    )
    assert diagnostics(tmp_path, with_klaviyo) == []


def test_relay_check_cli_reports_a_located_source_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay check` exits 1 and prints the located source error."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    rules = write(tmp_path, RULES.replace("verify: klaviyo", "verify: klavyo"))
    assert main(["check", "--rules", str(rules), "--templates", str(tmp_path / "templates")]) == 1
    err = capsys.readouterr().err
    assert f"{rules}:20:13: unknown source type 'klavyo' (did you mean 'klaviyo'?)" in err
    assert err.endswith("relay check: invalid configuration\n")


def test_send_test_signs_for_svix_and_standard_webhooks_sources_only(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    respx_mock: respx.MockRouter,
) -> None:
    """send-test signs with the source's secret under its header names (webhook-* for a Standard
    Webhooks source, verifiable by the reference library); other types get a clear message."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    rules = write(tmp_path, RULES)
    route = respx_mock.post("http://relay.test/webhooks/partner").mock(
        return_value=httpx.Response(200, json={"status": "accepted"})
    )
    sample = tmp_path / "event.json"
    sample.write_bytes(CLERK_EVENT)
    common = ["--rules", str(rules), "--templates", str(tmp_path / "templates")]
    url = "http://relay.test/webhooks/partner"
    assert main(["send-test", str(sample), "--source", "partner", "--url", url, *common]) == 0
    request = route.calls.last.request
    assert not [name for name in request.headers if name.startswith("svix-")]
    StandardWebhook(ENV["PARTNER_SECRET"]).verify(request.content, dict(request.headers))
    capsys.readouterr()
    assert main(["send-test", str(sample), "--source", "klaviyo", *common]) == 2
    assert capsys.readouterr().err == (
        "relay send-test: source 'klaviyo' is a klaviyo source; send-test supports svix and "
        "standard-webhooks sources\n"
    )


# --- the shipped example: Resend bounces and complaints → Slack --------------------------------


def test_resend_example_passes_check_and_names_the_address(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/resend-bounces passes `relay check` (rendering both samples), and its Slack alert
    names the bounced address."""
    monkeypatch.setenv("RESEND_WEBHOOK_SECRET", TEST_SECRET)
    monkeypatch.setenv("SLACK_EMAIL_ALERTS_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    common = ["--rules", str(EXAMPLE / "rules.yaml"), "--templates", str(ROOT / "templates")]
    assert main(["check", *common, "--samples", str(EXAMPLE / "samples")]) == 0
    assert (
        capsys.readouterr().out == "relay check: OK (1 rules, 1 sends, 1 sinks, 2 sample events)\n"
    )
    for sample, text in [
        ("email.bounced.json", "Email bounced: ada@example.com (Welcome to Acme, Ada!)"),
        ("email.complained.json", "Spam complaint: grace@example.com (Your weekly summary)"),
    ]:
        assert main(["preview", *common, "--json", str(EXAMPLE / "samples" / sample)]) == 0
        [result] = json.loads(capsys.readouterr().out)
        assert result["sends"][0]["payload"]["text"] == text


# --- ingest: batches stored one event at a time, deduplicated ---------------------------------


class FlakyStore(SQLiteStore):
    """A SQLite store whose ``fail_at``-th ingest call (1-based) cannot commit."""

    fail_at = 0
    calls = 0

    async def ingest(self, event: NewEvent, deliveries: Sequence[NewDelivery]) -> IngestOutcome:
        self.calls += 1
        if self.calls == self.fail_at:
            raise StoreUnavailableError("disk full")
        return await super().ingest(event, deliveries)


class Relay:
    def __init__(
        self, client: httpx.AsyncClient, store: FlakyStore, db: Path, woken: list[int]
    ) -> None:
        self.client, self.store, self.db, self.woken = client, store, db, woken

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return await self.client.post(f"http://relay.test{path}", content=body, headers=headers)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute(sql))

    def events(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT source, message_id, type FROM events ORDER BY message_id")

    def routed(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT e.message_id, d.rule FROM deliveries d JOIN events e ON e.id = d.event_id"
            " ORDER BY e.message_id"
        )


@asynccontextmanager
async def running(tmp_path: Path, now: float) -> AsyncIterator[Relay]:
    config = load(tmp_path)
    store = FlakyStore(tmp_path / "relay.db")
    await store.open()
    woken: list[int] = []  # one entry per worker wake-up
    endpoint = IngestEndpoint(lambda: config, store, lambda: now, lambda: woken.append(1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint)) as client:
        try:
            yield Relay(client, store, tmp_path / "relay.db", woken)
        finally:
            await store.close()


@pytest.mark.anyio
async def test_klaviyo_batch_routes_each_event_and_replay_is_deduplicated(tmp_path: Path) -> None:
    """A Klaviyo batch of three stores three events routed to three rules; the same batch again
    stores nothing new (duplicates: 3); a batch with one new item stores just that one."""
    async with running(tmp_path, int(KLAVIYO_TS)) as relay:
        response = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert response.status_code == 200
        assert response.json() == {
            "status": "accepted",
            "events": 3,
            "duplicates": 0,
            "deliveries": 3,
        }
        assert relay.events() == [
            ("klaviyo", f"7Xk2a{c}", t) for c, t in zip("QRS", KLAVIYO_TOPICS, strict=True)
        ]
        assert relay.routed() == [("7Xk2aQ", "received"), ("7Xk2aR", "clicked"), ("7Xk2aS", "spam")]
        stored = relay.rows("SELECT body FROM events WHERE message_id = '7Xk2aQ'")[0][0]
        assert json.loads(stored)["data"]["data"]["id"] == "7Xk2aQ"

        again = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert again.json() == {"status": "accepted", "events": 0, "duplicates": 3, "deliveries": 0}
        assert len(relay.events()) == 3
        assert len(relay.routed()) == 3

        doc = json.loads(KLAVIYO_BATCH)
        doc["data"][1] = {**doc["data"][1], "external_id": "7Xk2aT"}
        body = json.dumps(doc).encode()
        mixed = await relay.post("/webhooks/klaviyo", body, klaviyo_headers(body=body))
        assert mixed.json() == {"status": "accepted", "events": 1, "duplicates": 2, "deliveries": 1}
        assert ("7Xk2aT", "clicked") in relay.routed()


@pytest.mark.anyio
async def test_a_store_failure_mid_batch_is_503_and_the_retry_completes_it(tmp_path: Path) -> None:
    """If the second event cannot be committed the answer is 503 (the sender retries); the retry
    finds the first as a duplicate and stores the rest."""
    async with running(tmp_path, int(KLAVIYO_TS)) as relay:
        relay.store.fail_at = 2
        response = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert (response.status_code, response.json()) == (
            503,
            {"status": "store_unavailable", "retry": True},
        )
        assert [e[1] for e in relay.events()] == ["7Xk2aQ"]
        assert relay.woken == [1]  # the worker still hears of the delivery that was stored
        retry = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert retry.json() == {"status": "accepted", "events": 2, "duplicates": 1, "deliveries": 2}
        assert len(relay.routed()) == 3


@pytest.mark.anyio
async def test_single_event_sources_keep_the_single_event_answer(tmp_path: Path) -> None:
    """svix, standard-webhooks and hmac requests are one event: accepted with its event_id, then
    "duplicate" on a retry; a bad request to any source is a 400 with the reason."""
    async with running(tmp_path, NOW) as relay:
        clerk = svix_headers(
            "msg_a", NOW, svix_sign(Secret(TEST_SECRET), "msg_a", NOW, CLERK_EVENT)
        )
        partner_secret = Secret(ENV["PARTNER_SECRET"])
        partner = svix_headers(
            "msg_b", NOW, svix_sign(partner_secret, "msg_b", NOW, CLERK_EVENT), "webhook"
        )
        shop = {
            "X-Shop-Hmac": mac(ENV["SHOP_SECRET"], ORDER, "base64"),
            "X-Shop-Webhook-Id": "wh_1",
            "X-Shop-Topic": "orders/paid",
        }
        for path, body, headers, deliveries in [
            ("/webhooks/clerk", CLERK_EVENT, clerk, 1),
            ("/webhooks/partner", CLERK_EVENT, partner, 1),
            ("/webhooks/shop", ORDER, shop, 0),
        ]:
            first = await relay.post(path, body, headers)
            assert first.status_code == 200
            assert set(first.json()) == {"status", "event_id", "deliveries"}
            assert first.json()["deliveries"] == deliveries
            assert (await relay.post(path, body, headers)).json() == {"status": "duplicate"}
        assert relay.events() == [
            ("clerk", "msg_a", "user.created"),
            ("partner", "msg_b", "user.created"),
            ("shop", "wh_1", "orders/paid"),
        ]
        bad = await relay.post("/webhooks/partner", CLERK_EVENT, clerk)
        assert bad.json() == {"status": "rejected", "reason": "missing webhook-id header"}
        nojson = b"{"
        shop_bad = {**shop, "X-Shop-Hmac": mac(ENV["SHOP_SECRET"], nojson, "base64")}
        response = await relay.post("/webhooks/shop", nojson, shop_bad)
        assert (response.status_code, response.json()["reason"]) == (400, "body is not valid JSON")
        klaviyo_bad = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert klaviyo_bad.status_code == 400  # a day-old Unix timestamp
        assert klaviyo_bad.json()["reason"] == "timestamp too old"


# --- fuzzing: only VerificationError, never another exception ----------------------------------

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
    """Correctly signed arbitrary bodies (and ids, topics) give events whose stored body decodes
    to their envelope, or a VerificationError; never another exception."""
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
        assert json.loads(event.body) == event.event
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


# --- end to end: a real `relay serve` with the Resend example and a Klaviyo source -------------


@pytest.mark.e2e
def test_serve_resend_bounce_to_slack_and_klaviyo_batches(tmp_path: Path) -> None:
    """A real relay: a signed Resend bounce becomes a Slack alert naming the address; a Klaviyo
    batch is three events, and its replay stores nothing new."""
    from tests.e2e.conftest import SLACK_PATH, E2EProject, FakeUpstream, RelayProcess

    rules = (EXAMPLE / "rules.yaml").read_text(encoding="utf-8")
    rules = rules.replace("${SLACK_EMAIL_ALERTS_WEBHOOK_URL}", "${SLACK_WEBHOOK_URL}")
    rules = rules.replace(
        "sinks:", "  klaviyo:\n    path: /webhooks/klaviyo\n    verify: klaviyo\n"
        "    secret: ${KLAVIYO_SECRET}\n\nsinks:", 1
    )  # fmt: skip

    class Project(E2EProject):
        def env(self) -> dict[str, str]:
            return {
                **super().env(),
                "RESEND_WEBHOOK_SECRET": TEST_SECRET,
                "KLAVIYO_SECRET": KLAVIYO_SECRET,
            }

    with FakeUpstream() as upstream:
        root = tmp_path / "project"
        (root / "templates").mkdir(parents=True)
        for template in ("email-bounce-alert.yaml",):
            (root / "templates" / template).write_text((ROOT / "templates" / template).read_text())
        (root / "rules.yaml").write_text(rules, encoding="utf-8")
        relay = RelayProcess(Project(root, upstream)).start()
        try:
            bounce = (EXAMPLE / "samples" / "email.bounced.json").read_bytes()
            now = int(time.time())
            headers = svix_headers(
                "msg_bounce_1", now, svix_sign(Secret(TEST_SECRET), "msg_bounce_1", now, bounce)
            )
            response = httpx.post(relay.url + "/webhooks/resend", content=bounce, headers=headers)
            assert response.json()["status"] == "accepted"
            [alert] = upstream.wait_for(SLACK_PATH, 1)
            assert alert.json["text"] == "Email bounced: ada@example.com (Welcome to Acme, Ada!)"

            ts = str(now)
            for expected in [(3, 0), (0, 3)]:
                answer = httpx.post(
                    relay.url + "/webhooks/klaviyo",
                    content=KLAVIYO_BATCH,
                    headers=klaviyo_headers(ts=ts),
                ).json()
                assert (answer["events"], answer["duplicates"]) == expected
            stored = Project(root, upstream).db.events()
            assert sorted(e["message_id"] for e in stored if e["source"] == "klaviyo") == [
                "7Xk2aQ",
                "7Xk2aR",
                "7Xk2aS",
            ]
        finally:
            relay.stop()
