"""What the provider-quirk tests share: a message to send (relay.sinks.testing.send sends it)."""

from __future__ import annotations

from typing import Any

from relay.sinks.base import Message


def message(payload: dict[str, Any], key: str = "msg_1:welcome:0") -> Message:
    return Message("dlv_1", key, "msg_1", "user.created", "welcome", "sink", payload,
                   {"type": "user.created", "data": {"id": "user_1"}})  # fmt: skip
