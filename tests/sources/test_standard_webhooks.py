"""The standard-webhooks source: the same scheme as Svix under webhook-* header names only."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook as StandardWebhook

from relay.errors import EventShapeError
from tests.conftest import TEST_SECRET
from tests.sources.helpers import CLERK_EVENT, NOW, SVIX_VECTORS, build, rejected, svix_headers


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
