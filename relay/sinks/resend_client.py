"""resend's async HTTP client, replaced by relay's: ``SharedClientAdapter`` sends resend's requests
through relay's shared httpx client, with the key, base URL and timeout of the sink sending
(``sending(Sender(...))`` puts them in a ContextVar, so sinks with different keys never race).
It encodes the JSON body itself (a message's own text that cannot be encoded is its permanent
error, whatever httpx's version does with it) and judges Resend's answer by its status first
(``relay.sinks.resend_answers.judge``), before resend parses it: only a 2xx whose JSON has an
email id reaches resend.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
import resend

from relay.secret import Secret
from relay.sinks import httpcheck
from relay.sinks.base import MESSAGE_ERRORS, encode_utf8, message_error
from relay.sinks.resend_answers import WHAT, judge


@dataclass(frozen=True, slots=True)
class Sender:
    """What one sink's send goes through: relay's shared client, its key, base URL and timeout."""

    http: httpx.AsyncClient
    api_key: Secret
    base_url: str
    timeout_s: float


_SENDER: ContextVar[Sender | None] = ContextVar("relay_resend_sender", default=None)


@contextmanager
def sending(sender: Sender) -> Iterator[None]:
    """resend's calls inside send through ``sender`` (and the adapter is installed)."""
    install_adapter()
    token = _SENDER.set(sender)
    try:
        yield
    finally:
        _SENDER.reset(token)


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
        sender = _SENDER.get()
        if sender is None:  # a call made outside relay's sinks: behave as before relay came
            if self._fallback is None:
                raise RuntimeError("no resend async HTTP client configured")
            return await self._fallback.request(method, url, headers, json, files, data)
        path = url.removeprefix(resend.api_url)  # resend built url from api_url just now
        settings = sender
        sent_headers = {**headers, "Authorization": f"Bearer {settings.api_key.reveal()}"}
        content = None
        if json is not None:  # encoded here, not by httpx: what a lone surrogate does must not
            try:  # depend on httpx's version (some escape it, some fail to encode it)
                text = _encode_json(json)
            except MESSAGE_ERRORS as exc:
                raise message_error(WHAT, exc) from exc
            content = encode_utf8(text, WHAT)
            sent_headers["Content-Type"] = "application/json"
        request = sender.http.build_request(
            method.upper(), settings.base_url + path, headers=sent_headers, content=content,
            files=files, data=data, timeout=settings.timeout_s,
        )  # fmt: skip
        response, body = await httpcheck.send_bounded(sender.http, request)
        judge(response.status_code, response.headers, body, [settings.api_key.reveal()])
        # An email id in a JSON object: hand it to resend as JSON whatever its content type said.
        headers = {**response.headers, "content-type": "application/json"}
        return body, response.status_code, headers


_encode_json = jsonlib.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def install_adapter() -> None:
    """Make ``resend.default_async_http_client`` relay's adapter (idempotent)."""
    current = resend.default_async_http_client
    if not isinstance(current, SharedClientAdapter):
        resend.default_async_http_client = SharedClientAdapter(fallback=current)
