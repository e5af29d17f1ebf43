"""What the source tests share: ready sources on a frozen clock, each type's secrets and signed
requests, a rules.yaml with every source type, and an in-process relay over it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import Config, load_config
from relay.errors import StoreUnavailableError, VerificationError
from relay.ingest import IngestEndpoint
from relay.secret import Secret
from relay.sources import klaviyo
from relay.sources.base import Source, SourceContext, load_source_types
from relay.store.base import NewDelivery, NewEvent
from relay.store.sqlite import SQLiteStore
from relay.store.steps import IngestResult, Step
from tests.conftest import ROOT, TEST_ENV

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


HMAC_SECRET = "hmac-test-secret-0123456789"
ORDER = b'{"id":"ord_1","type":"order.paid","data":{"object":{"id":"pay_9","amount":1200}}}'


def mac(secret: str, message: bytes, encoding: str) -> str:
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


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


def load(tmp_path: Path, rules: str = RULES, env: Mapping[str, str] = ENV) -> Config:
    return load_config(write(tmp_path, rules), tmp_path / "templates", env=env)


class FlakyStore(SQLiteStore):
    """A SQLite store whose ``fail_at``-th ingest call (1-based) cannot commit. (``ingest``
    goes through ``admit``, as an ingest with workflow steps does.)"""

    fail_at = 0
    calls = 0

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        self.calls += 1
        if self.calls == self.fail_at:
            raise StoreUnavailableError("disk full")
        return await super().admit(event, deliveries, steps)


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
