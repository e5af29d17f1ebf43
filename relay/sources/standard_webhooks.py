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

from pydantic import BeforeValidator, PlainSerializer, field_validator

from relay.secret import Secret
from relay.sources.base import (
    InboundEvent,
    SourceContext,
    SourceSettings,
    SourceType,
    blank_to_none,
)
from relay.sources.svix import SvixSettings, SvixSource
from relay.verify import SECRET_PREFIX, parse_signing_secret

__all__ = ["SOURCE", "StandardWebhooksSettings", "StandardWebhooksSource", "signing_secret"]


def signing_secret(secret: Secret) -> Secret:
    """The secret in ``whsec_`` form, as ``relay.verify`` takes it."""
    value = secret.reveal()
    return secret if value.startswith(SECRET_PREFIX) else Secret(SECRET_PREFIX + value)


def _secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value.startswith(SECRET_PREFIX) or not value or value != value.strip():
        parse_signing_secret(value)  # says what is wrong, never quoting the value
    elif value[0] in "'\"" or value[-1] in "'\"":
        raise ValueError("signing secret is wrapped in quotes; remove the quotes")
    else:
        parse_signing_secret(SECRET_PREFIX + value)
    return Secret(value)


StandardSecret = Annotated[
    Secret, BeforeValidator(_secret), PlainSerializer(lambda s: repr(s), return_type=str)
]


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
            secret=signing_secret(settings.secret),
            previous_secret=None if previous is None else signing_secret(previous),
        )
        self._inner = SvixSource(svix, context, header_prefixes=("webhook",))

    def verify(self, body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        return self._inner.verify(body, headers)


SOURCE = SourceType(
    name="standard-webhooks", settings=StandardWebhooksSettings, build=StandardWebhooksSource
)
