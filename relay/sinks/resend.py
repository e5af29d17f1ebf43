"""The Resend email sink: ``resend.Emails.send_async`` over relay's shared httpx client.

resend keeps its key, base URL and async client in module globals. relay never sets the first two:
it installs its own async client (``relay.sinks.resend_client``), which each send tells which
shared client, key, base URL and timeout to use; it also encodes the request and judges Resend's
answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

import httpx
import resend
from pydantic import Field, field_validator
from resend.exceptions import ResendError

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.recipients.addresses import addresses
from relay.sinks import httpcheck
from relay.sinks.base import (
    Message,
    SecretStr,
    SendFields,
    SinkContext,
    SinkSettings,
    SinkType,
    TemplateField,
)
from relay.sinks.resend_answers import WHAT
from relay.sinks.resend_client import Sender, SharedClientAdapter, install_adapter, sending

__all__ = ["SINK", "ResendSendFields", "ResendSettings", "ResendSink", "SharedClientAdapter"]


class ResendSettings(SinkSettings):
    """``type: resend``: an API key, a sender, and optionally a reply-to and an API base URL."""

    api_key: SecretStr
    from_: str = Field(alias="from", min_length=3)
    reply_to: str | None = None
    base_url: str = Field(
        default_factory=lambda: os.environ.get("RESEND_API_URL", "https://api.resend.com")
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        httpcheck.check_http_url(value)
        return value.rstrip("/")


class ResendSendFields(SendFields):
    """Per-send fields (Jinja strings): ``to``; optional ``cc``, ``bcc``, ``reply_to``, ``from``."""

    to: str
    cc: str | None = None
    bcc: str | None = None
    reply_to: str | None = None
    from_: str | None = Field(default=None, alias="from")


class ResendSink:
    """Sends one email per message, with the message's idempotency key."""

    def __init__(self, settings: ResendSettings, context: SinkContext) -> None:
        self.settings = settings
        self.http = context.http
        self._sender = Sender(context.http, settings.api_key, settings.base_url, settings.timeout_s)
        install_adapter()

    def params(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The Resend ``/emails`` request body for a rendered payload."""
        to = addresses(payload.get("to"))
        if not to:
            raise PermanentError(f"no recipient: `to` rendered empty ({payload.get('to')!r})")
        if not payload.get("html") and not payload.get("text"):
            raise PermanentError("email has neither html nor text")
        params: dict[str, Any] = {
            "from": payload.get("from") or self.settings.from_,
            "to": to,
            "subject": str(payload.get("subject", "")),
        }
        params.update({key: str(payload[key]) for key in ("html", "text") if payload.get(key)})
        for key, default in (("cc", None), ("bcc", None), ("reply_to", self.settings.reply_to)):
            if value := addresses(payload.get(key) or default):
                params[key] = value
        if headers := payload.get("headers"):  # relay's own (List-Unsubscribe): never a template
            params["headers"] = {str(name): str(value) for name, value in headers.items()}
        return params

    async def send(self, message: Message) -> None:
        params = self.params(message.payload)
        try:
            with sending(self._sender):
                await resend.Emails.send_async(
                    cast(resend.Emails.SendParams, params),
                    {"idempotency_key": message.idempotency_key},
                )
        except ResendError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: ResendError) -> DeliveryError:
        secrets = [self.settings.api_key.reveal()]
        if exc.error_type == "HttpClientError":
            cause = exc.__context__  # what the adapter raised; resend wrapped it
            if isinstance(cause, DeliveryError):
                return cause
            if isinstance(cause, httpx.HTTPError):
                return httpcheck.translate_transport_error(
                    WHAT, cause, timeout_s=self.settings.timeout_s, secrets=secrets
                )
            return RetryableError(f"{WHAT}: request failed ({type(cause).__name__})")
        code = str(exc.code)
        status = int(code) if code.isdigit() and int(code) >= 300 else 500
        detail = httpcheck.excerpt(f"{exc.error_type}: {exc.message}", secrets)
        error = httpcheck.status_error(WHAT, status, exc.headers, detail)
        return error or RetryableError(f"{WHAT}: {detail}", status=status)


def describe(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labelled lines of a rendered email for ``relay preview``."""
    lines = [("to", ", ".join(addresses(payload.get("to"))))]
    keys = ("from", "cc", "bcc", "reply_to")
    lines += [(key, ", ".join(addresses(payload[key]))) for key in keys if payload.get(key)]
    lines.append(("subject", str(payload.get("subject", ""))))
    lines += [(name, str(value)) for name, value in (payload.get("headers") or {}).items()]
    lines += [(key, str(payload[key])) for key in ("text", "html") if payload.get(key)]
    return lines


def recipients(payload: Mapping[str, Any]) -> dict[str, list[str]]:
    """Who a rendered email goes to, by field (the worker checks them against suppressions)."""
    return {key: addresses(payload.get(key)) for key in ("to", "cc", "bcc")}


SINK = SinkType(
    name="resend",
    settings=ResendSettings,
    build=ResendSink,
    send_fields=ResendSendFields,
    template_fields={
        "subject": TemplateField("text", required=True),
        "html": TemplateField("html"),
        "text": TemplateField("text"),
    },
    describe=describe,
    recipients=recipients,
)
