"""The outbound HTTP sink: JSON to one configured URL, optionally signed as a Standard Webhook
(``relay.sources.signing``: the same scheme, and the same rule for the secret, as inbound).

The URL comes only from settings, never from event data. Redirects are never followed (a 3xx is a
permanent failure), at most 64 KiB of an answer is read, and error texts show the URL without its
userinfo or query, and no header value (any of them may be a credential).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from relay.errors import PermanentError
from relay.secret import Secret
from relay.sinks import httpcheck
from relay.sinks.base import (
    Message,
    SecretStr,
    SinkContext,
    SinkSettings,
    SinkType,
    TemplateField,
    encode_utf8,
    message_error,
)
from relay.sources.signing import decode_secret, sign_with, signing_key

__all__ = ["SINK", "HttpSettings", "HttpSink"]

# Headers relay sets itself; a configured header may not replace them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type",
     "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature"}
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERBS = {"POST": "post to", "PUT": "put to", "PATCH": "patch", "DELETE": "delete"}


class HttpSettings(SinkSettings):
    """``type: http``: ``url``, ``method``, extra ``headers`` and an optional ``signing_secret``."""

    url: str
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    signing_secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        httpcheck.check_http_url(value)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # the query or userinfo may hold a token
            yield name, httpcheck.display_url(httpx.URL(value)) if name == "url" else value

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, Secret]) -> dict[str, Secret]:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is set by relay and cannot be configured")
            if any(c in value.reveal() for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break or NUL")
        return headers

    @field_validator("signing_secret")
    @classmethod
    def _check_signing_secret(cls, value: Secret | None) -> Secret | None:
        if value is not None:
            decode_secret(value.reveal())  # its ValueError never quotes the secret
        return value


class HttpSink:
    """Sends the rendered ``body`` (or the event envelope) as JSON to the configured URL."""

    def __init__(
        self,
        settings: HttpSettings,
        context: SinkContext,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._http = context.http
        self._clock = clock
        self._key = signing_key(settings.signing_secret) if settings.signing_secret else None
        url = httpx.URL(settings.url)
        self._what = f"{_VERBS[settings.method]} {httpcheck.display_url(url)}"
        secrets = [v.reveal() for v in settings.headers.values()]
        secrets += [url.query.decode(), url.userinfo.decode(), url.password or ""]
        if settings.signing_secret is not None:
            secrets.append(settings.signing_secret.reveal())
        self._secrets = secrets

    def content(self, message: Message) -> bytes:
        """The request body: the rendered ``body``, or else the event envelope, as compact JSON."""
        body = message.payload["body"] if "body" in message.payload else dict(message.event)
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except RecursionError as exc:
            raise message_error(self._what, exc) from exc
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"{self._what}: body is not JSON: {exc}") from exc
        return encode_utf8(text, self._what)

    def headers(self, message: Message, content: bytes) -> dict[str, str]:
        """Configured headers plus Content-Type, Idempotency-Key and, if signing, webhook-*."""
        headers = {name: value.reveal() for name, value in self._settings.headers.items()}
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = message.idempotency_key
        if self._key is not None:
            timestamp = int(self._clock())
            headers["webhook-id"] = message.idempotency_key
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign_with(
                self._key, message.idempotency_key, timestamp, content
            )
        return headers

    async def send(self, message: Message) -> None:
        settings = self._settings
        content = self.content(message)
        request = self._http.build_request(
            settings.method,
            settings.url,
            content=content,
            headers=self.headers(message, content),
            timeout=settings.timeout_s,
        )
        response, raw = await httpcheck.send_checked(
            self._http, request, self._what, timeout_s=settings.timeout_s, secrets=self._secrets
        )
        answer = httpcheck.excerpt(raw, self._secrets)
        httpcheck.classify_status(self._what, response.status_code, response.headers, answer)


def describe(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labelled lines of a rendered HTTP message for ``relay preview``."""
    if "body" not in payload:
        return [("body", "(the event envelope, unchanged)")]
    return [("body", json.dumps(payload["body"], indent=2, ensure_ascii=False))]


SINK = SinkType(
    name="http",
    settings=HttpSettings,
    build=HttpSink,
    template_fields={"body": TemplateField("data")},
    template_required=False,
    describe=describe,
)
