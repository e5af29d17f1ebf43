"""The svix source: Svix's own test vectors, Clerk events signed by the svix library, rotation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from svix.webhooks import Webhook as SvixWebhook

from relay.errors import EventShapeError
from relay.secret import Secret
from relay.sources.base import InboundEvent
from relay.sources.signing import sign as svix_sign
from tests.conftest import TEST_SECRET
from tests.sources.helpers import CLERK_EVENT, NOW, SVIX_VECTORS, build, rejected, svix_headers


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
