"""``verify: svix``: Svix-signed webhooks (Clerk, Resend, any Svix sender).

The request is one event: the body is its envelope (``{"type": ..., "data": ...}``) and the
``svix-id`` header its id, the same on every retry and replay of a message. ``webhook-*`` header
names are read too (the ``svix-*`` name wins per header). Signature checks are
``relay.sources.signing.SvixVerifier``'s: ``{id}.{timestamp}.{raw body}``, HMAC-SHA256, base64,
any ``v1`` entry matching the secret or the previous one, timestamp within ±300 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import field_validator

from relay.secret import SecretStr, checked
from relay.sources import clerk
from relay.sources.base import (
    InboundEvent,
    SourceContext,
    SourceSettings,
    SourceType,
    blank_to_none,
    parse_envelope,
)
from relay.sources.signing import SvixVerifier, parse_signing_secret

__all__ = ["RESEND_EVENT_TYPES", "SOURCE", "SigningSecret", "SvixSettings", "SvixSource"]

# Resend's webhook event types (resend.com/docs/webhooks/event-types). Resend signs through Svix,
# so a `resend` source is a svix source; knowing its types keeps `relay check` from warning that
# `email.bounced` "matches no known event type".
RESEND_EVENT_TYPES: tuple[str, ...] = (
    "email.sent", "email.delivered", "email.delivery_delayed", "email.complained",
    "email.bounced", "email.opened", "email.clicked", "email.received", "email.failed",
    "email.scheduled", "email.suppressed", "contact.created", "contact.updated",
    "contact.deleted", "domain.created", "domain.updated", "domain.deleted",
    "suppression.added", "suppression.removed",
)  # fmt: skip


SigningSecret = Annotated[SecretStr, checked(parse_signing_secret)]
"""A ``whsec_...`` signing secret, checked when rules.yaml loads; redacted everywhere."""


class SvixSettings(SourceSettings):
    """``verify: svix``: ``secret`` (``whsec_...``) and, while rotating, ``previous_secret``."""

    secret: SigningSecret
    previous_secret: SigningSecret | None = None

    _blank_previous = field_validator("previous_secret", mode="before")(blank_to_none)


class SvixSource:
    """Verifies with ``SvixVerifier``; the body is the one event."""

    def __init__(
        self,
        settings: SvixSettings,
        context: SourceContext,
        *,
        header_prefixes: tuple[str, ...] = ("svix", "webhook"),
    ) -> None:
        secrets = [settings.secret]
        if settings.previous_secret is not None:
            secrets.append(settings.previous_secret)
        self._verifier = SvixVerifier(secrets, clock=context.clock, header_prefixes=header_prefixes)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        message = self._verifier.verify(body, headers)
        event = parse_envelope(body)
        return [InboundEvent(message.message_id, event["type"], event, body)]


SOURCE = SourceType(
    name="svix",
    settings=SvixSettings,
    build=SvixSource,
    event_types=(*clerk.EVENT_TYPES, *RESEND_EVENT_TYPES),
    sender="Clerk",
)
