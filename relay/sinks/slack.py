"""The Slack sink: an incoming webhook, or ``chat.postMessage`` with a bot token and a channel.

Posts with relay's shared httpx client; slack-sdk only validates Block Kit and turns a Web API
``{"ok": false}`` answer into ``SlackApiError``. Error texts never show the webhook path (it holds a
token) nor the bot token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self

import httpx
from pydantic import field_validator, model_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from relay.errors import PayloadError, PermanentError, RetryableError
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
)
from relay.sinks.slack_blocks import validate_blocks

__all__ = ["SINK", "SlackSettings", "SlackSink", "check_payload", "validate_blocks"]

# Incoming-webhook answers that no retry fixes, whatever the status they come with.
WEBHOOK_PERMANENT = frozenset(
    {"invalid_payload", "channel_not_found", "channel_is_archived", "no_service", "invalid_token",
     "action_prohibited", "no_active_hooks", "posting_to_general_channel_denied", "user_not_found",
     "team_disabled", "invalid_blocks", "invalid_blocks_format", "too_many_attachments"}
)  # fmt: skip
# chat.postMessage errors that are Slack's trouble, not ours.
API_RETRYABLE = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout", "team_added_to_org"}
)  # fmt: skip


class SlackSettings(SinkSettings):
    """``type: slack``: either ``webhook_url``, or ``token`` and ``channel`` (and ``api_url``)."""

    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/chat.postMessage"

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: Secret | None) -> Secret | None:
        if value is not None:
            httpcheck.check_http_url(value.reveal())  # its ValueError never quotes the URL
        return value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        httpcheck.check_http_url(value)
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set either webhook_url, or token and channel (not both)")
        if self.webhook_url is not None and self.channel is not None:
            raise ValueError("channel is fixed by the incoming webhook: remove channel")
        if self.token is not None and not self.channel:
            raise ValueError("token needs a channel (a channel ID such as C0123456789 or #name)")
        return self


class SlackSink:
    """Posts ``text`` (and optional ``blocks``) to one Slack channel."""

    def __init__(self, settings: SlackSettings, context: SinkContext) -> None:
        self._settings = settings
        self._http = context.http
        secret = settings.webhook_url or settings.token
        self._secrets = [secret.reveal()] if secret else []
        if settings.webhook_url is not None:
            self._what = "post to Slack"
        else:
            self._what = f"post to Slack channel {settings.channel}"

    def body(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body posted to Slack for a rendered payload."""
        check_payload(payload)
        body: dict[str, Any] = {"text": payload["text"]}
        if payload.get("blocks") is not None:
            body["blocks"] = payload["blocks"]
        if self._settings.token is not None:
            body["channel"] = self._settings.channel
        return body

    async def send(self, message: Message) -> None:
        settings = self._settings
        content = json.dumps(self.body(message.payload), separators=(",", ":"), ensure_ascii=False)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if settings.webhook_url is not None:
            url = settings.webhook_url.reveal()
        else:
            url = settings.api_url
            headers["Authorization"] = f"Bearer {settings.token.reveal() if settings.token else ''}"
        request = self._http.build_request(
            "POST",
            url,
            content=encode_utf8(content, self._what),
            headers=headers,
            timeout=settings.timeout_s,
        )
        response, raw = await httpcheck.send_checked(
            self._http, request, self._what, timeout_s=settings.timeout_s, secrets=self._secrets
        )
        if settings.webhook_url is not None:
            self._check_webhook_answer(response, raw)
        else:
            self._check_api_answer(response, raw)

    def _check_webhook_answer(self, response: httpx.Response, raw: bytes) -> None:
        answer = httpcheck.excerpt(raw, self._secrets)
        if answer in WEBHOOK_PERMANENT:
            raise PermanentError(f"{self._what}: {answer}", status=response.status_code)
        httpcheck.classify_status(self._what, response.status_code, response.headers, answer)

    def _check_api_answer(self, response: httpx.Response, raw: bytes) -> None:
        answer = httpcheck.excerpt(raw, self._secrets)
        if response.status_code != 200:
            httpcheck.classify_status(self._what, response.status_code, response.headers, answer)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RetryableError(f"{self._what}: answer is not JSON: {answer}") from exc
        if not isinstance(data, dict):
            raise RetryableError(f"{self._what}: answer is not a JSON object: {answer}")
        try:
            slack_response = SlackResponse(
                client=None, http_verb="POST", api_url=self._settings.api_url, req_args={},
                data=data, headers=dict(response.headers), status_code=200,
            )  # fmt: skip
            slack_response.validate()  # type: ignore[no-untyped-call]
        except SlackApiError as exc:
            error = str(data.get("error", "unknown_error"))
            text = f"{self._what}: Slack API error {httpcheck.excerpt(error, self._secrets)}"
            if error in API_RETRYABLE:
                retry_after_s = httpcheck.parse_retry_after(response.headers.get("retry-after"))
                raise RetryableError(text, retry_after_s=retry_after_s) from exc
            raise PermanentError(text) from exc


def check_payload(payload: Mapping[str, Any]) -> None:
    """A rendered Slack message as Slack checks it (before each send, and under ``relay
    check``): a non-blank ``text`` and valid ``blocks``; else a PayloadError."""
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PayloadError("Slack message has no text", path=("text",))
    if payload.get("blocks") is not None:
        validate_blocks(payload["blocks"])


def describe(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labelled lines of a rendered Slack message for ``relay preview``."""
    lines = [("text", str(payload.get("text", "")))]
    if payload.get("blocks") is not None:
        lines.append(("blocks", json.dumps(payload["blocks"], indent=2, ensure_ascii=False)))
    return lines


SINK = SinkType(
    name="slack",
    settings=SlackSettings,
    build=SlackSink,
    template_fields={
        "text": TemplateField("slack", required=True),
        "blocks": TemplateField("slack-data"),
    },
    describe=describe,
    check=check_payload,
)
