"""The standard-webhooks source: the same scheme as Svix under webhook-* header names only."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
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


def test_standard_webhooks_secret_without_padding_is_the_same_key() -> None:
    """A base64 secret without its `=` padding (the reference library accepts it) verifies what
    the library signs with it, with or without whsec_."""
    bare = base64.b64encode(b"partner-key-of-17").decode().rstrip("=")  # 17 bytes: one '='
    signature = StandardWebhook(bare).sign(
        "msg_pad", datetime.fromtimestamp(NOW, UTC), CLERK_EVENT.decode()
    )
    for secret in (bare, "whsec_" + bare):
        source = build("standard-webhooks", secret=secret)
        [event] = source.verify(CLERK_EVENT, svix_headers("msg_pad", NOW, signature, "webhook"))
        assert event.message_id == "msg_pad"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("bm90LWJhc2U2NA!!", "signing secret is not valid base64"),
        ("whsec_bm90LWJhc2U2NA!!", "signing secret is not valid base64 after 'whsec_'"),
    ],
)
def test_standard_webhooks_secret_errors_mention_whsec_only_when_it_is_there(
    secret: str, message: str
) -> None:
    """A bare secret that is not base64 is refused without a word about whsec_, which it never
    had; one with the prefix says where the base64 went wrong."""
    with pytest.raises(ValidationError) as info:
        build("standard-webhooks", secret=secret)
    [error] = info.value.errors()
    assert error["msg"] == f"Value error, {message}"
