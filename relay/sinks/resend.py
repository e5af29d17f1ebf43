"""The Resend email sink: ``resend.Emails.send_async`` over relay's shared httpx client.

resend keeps its key, base URL and async client in module globals. relay never sets the first two:
it installs ``SharedClientAdapter`` as ``resend.default_async_http_client`` (at build and before
each send), and each send puts its sink in ``_SENDER``, a ContextVar the adapter reads the shared
client, key, base URL and timeout from. Sinks with different keys therefore never race.

The adapter also judges Resend's answer itself (``relay.sinks.resend_answers.judge``), by its
status first, before resend parses it: only a 2xx whose JSON has an email id reaches resend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, cast

import httpx
import resend
from pydantic import Field, field_validator
from resend.exceptions import ResendError

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.recipients.addresses import addresses
from relay.sinks import httpcheck
from relay.sinks.base import (
    MESSAGE_ERRORS,
    Message,
    SecretStr,
    SendFields,
    SinkContext,
    SinkSettings,
    SinkType,
    TemplateField,
    message_error,
)
from relay.sinks.resend_answers import WHAT, judge

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


_SENDER: ContextVar[ResendSink | None] = ContextVar("relay_resend_sender", default=None)


class SharedClientAdapter(resend.AsyncHTTPClient):
    """resend's async client, sending through the calling sink's shared httpx client and key."""

    def __init__(self, fallback: resend.AsyncHTTPClient | None) -> None:
        self._fallback = fallback

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        sink = _SENDER.get()
        if sink is None:  # a call made outside relay's sinks: behave as before relay came
            if self._fallback is None:
                raise RuntimeError("no resend async HTTP client configured")
            return await self._fallback.request(method, url, headers, json, files, data)
        path = url.removeprefix(resend.api_url)  # resend built url from api_url just now
        settings = sink.settings
        sent_headers = {**headers, "Authorization": f"Bearer {settings.api_key.reveal()}"}
        try:  # httpx encodes the JSON body here: the message's own text may not encode
            request = sink.http.build_request(
                method.upper(), settings.base_url + path, headers=sent_headers, json=json,
                files=files, data=data, timeout=settings.timeout_s,
            )  # fmt: skip
        except MESSAGE_ERRORS as exc:
            raise message_error(WHAT, exc) from exc
        response, body = await httpcheck.send_bounded(sink.http, request)
        judge(response.status_code, response.headers, body, [settings.api_key.reveal()])
        # An email id in a JSON object: hand it to resend as JSON whatever its content type said.
        headers = {**response.headers, "content-type": "application/json"}
        return body, response.status_code, headers


def install_adapter() -> None:
    """Make ``resend.default_async_http_client`` relay's adapter (idempotent)."""
    current = resend.default_async_http_client
    if not isinstance(current, SharedClientAdapter):
        resend.default_async_http_client = SharedClientAdapter(fallback=current)


class ResendSink:
    """Sends one email per message, with the message's idempotency key."""

    def __init__(self, settings: ResendSettings, context: SinkContext) -> None:
        self.settings = settings
        self.http = context.http
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
        install_adapter()
        token = _SENDER.set(self)
        try:
            await resend.Emails.send_async(
                cast(resend.Emails.SendParams, params),
                {"idempotency_key": message.idempotency_key},
            )
        except ResendError as exc:
            raise self._translate(exc) from exc
        finally:
            _SENDER.reset(token)

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
