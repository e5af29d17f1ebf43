"""``verify: standard-webhooks``: senders that follow the Standard Webhooks spec.

The scheme is Svix's (``{id}.{timestamp}.{raw body}``, HMAC-SHA256, base64, ``v1,`` entries,
±300 s), under the ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature`` headers only:
``svix-*`` headers are not read. The secret is ``whsec_`` + base64 of the key; some senders show
the base64 part alone, which is accepted too. The body is the event envelope
(``{"type": ..., "data": ...}``) and ``webhook-id`` its id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import field_validator

from relay.secret import SecretStr, checked
from relay.sources.base import (
    InboundEvent,
    SourceContext,
    SourceSettings,
    SourceType,
    blank_to_none,
)
from relay.sources.signing import check_unprefixed_secret, prefixed
from relay.sources.svix import SvixSettings, SvixSource

__all__ = ["SOURCE", "StandardWebhooksSettings", "StandardWebhooksSource"]

StandardSecret = Annotated[SecretStr, checked(check_unprefixed_secret)]
"""A ``whsec_...`` secret, or its base64 part alone (as some senders show it)."""


class StandardWebhooksSettings(SourceSettings):
    """``verify: standard-webhooks``: ``secret`` and, while rotating, ``previous_secret``."""

    secret: StandardSecret
    previous_secret: StandardSecret | None = None

    _blank_previous = field_validator("previous_secret", mode="before")(blank_to_none)


class StandardWebhooksSource:
    """A Svix check that reads only the ``webhook-*`` headers."""

    def __init__(self, settings: StandardWebhooksSettings, context: SourceContext) -> None:
        previous = settings.previous_secret
        svix = SvixSettings.model_construct(
            path=settings.path,
            secret=prefixed(settings.secret),
            previous_secret=None if previous is None else prefixed(previous),
        )
        self._inner = SvixSource(svix, context, header_prefixes=("webhook",))

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        return self._inner.verify(body, headers)


SOURCE = SourceType(
    name="standard-webhooks", settings=StandardWebhooksSettings, build=StandardWebhooksSource
)
