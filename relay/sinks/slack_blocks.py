"""Block Kit as Slack checks it, for the blocks a Slack message template renders.

``validate_blocks`` runs before every send (a ``PayloadError``, permanent: Slack would answer
``invalid_blocks`` to every retry) and under ``relay check`` on each sample's rendering, where the
error's ``path`` points at the template line at fault. slack-sdk's models check most lengths and
required fields; they let through what Slack still refuses, which is checked here first: a
``header`` whose text is ``mrkdwn`` (it must be ``plain_text``), a text object of another type, an
empty text, a section field over 2,000 characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from relay.errors import PayloadError
from relay.sinks.httpcheck import excerpt

__all__ = ["MAX_BLOCKS", "TEXT_SLOTS", "validate_blocks"]

MAX_BLOCKS = 50
PLAIN, ANY_TEXT = ("plain_text",), ("plain_text", "mrkdwn")

TEXT_SLOTS: Mapping[str, Mapping[str, tuple[tuple[str, ...], int]]] = {
    "header": {"text": (PLAIN, 150)},
    "section": {"text": (ANY_TEXT, 3000)},
    "image": {"title": (PLAIN, 2000)},
    "video": {"title": (PLAIN, 200), "description": (PLAIN, 200)},
}
"""Per block type, its single text objects: the text types Slack allows there, and the longest
text (Slack's Block Kit reference)."""
FIELD_CHARS = 2000  # each of a section's fields
CONTEXT_ELEMENTS = 10


def _problem(path: tuple[str | int, ...], message: str) -> PayloadError:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return PayloadError(f"invalid Slack blocks: {where.lstrip('.')}: {message}", path=path)


def _text(value: object, path: tuple[str | int, ...], kinds: tuple[str, ...], limit: int) -> None:
    """A text object at ``path``: one of ``kinds``, with a text of 1 to ``limit`` characters."""
    if not isinstance(value, dict):
        raise _problem(path, f"must be a text object ({' or '.join(kinds)}), not {value!r:.40}")
    kind = value.get("type")
    if kind not in kinds:
        allowed = " or ".join(kinds)
        raise _problem((*path, "type"), f"must be {allowed}, not {kind!r:.40}")
    text = value.get("text")
    if not isinstance(text, str) or not text:
        raise _problem((*path, "text"), "must be a non-empty string")
    if len(text) > limit:
        raise _problem((*path, "text"), f"is {len(text)} characters, at most {limit}")


def _check_texts(block: Mapping[str, Any], path: tuple[str | int, ...]) -> None:
    kind = block["type"]
    for key, (kinds, limit) in TEXT_SLOTS.get(kind, {}).items():
        if key in block or (kind == "header" and key == "text"):
            _text(block.get(key), (*path, key), kinds, limit)
    if kind == "section" and isinstance(block.get("fields"), list):
        for j, item in enumerate(block["fields"]):
            _text(item, (*path, "fields", j), ANY_TEXT, FIELD_CHARS)
    if kind == "context" and isinstance(block.get("elements"), list):
        elements = block["elements"]
        if len(elements) > CONTEXT_ELEMENTS:
            raise _problem((*path, "elements"), f"{len(elements)} elements, at most 10")
        for j, item in enumerate(elements):
            if not (isinstance(item, dict) and item.get("type") == "image"):
                _text(item, (*path, "elements", j), ANY_TEXT, 3000)


def validate_blocks(value: object) -> list[dict[str, Any]]:
    """Rendered ``blocks`` checked as Slack checks them; else a PayloadError saying where and
    why (its ``path`` starts with ``"blocks"``)."""
    if not isinstance(value, list):
        raise _problem(("blocks",), f"expected a list, got {type(value).__name__}")
    if len(value) > MAX_BLOCKS:
        raise _problem(("blocks",), f"{len(value)} blocks, at most {MAX_BLOCKS}")
    for i, item in enumerate(value):
        path: tuple[str | int, ...] = ("blocks", i)
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _problem(path, "is not an object with a type")
        _check_texts(item, path)
        try:
            block = Block.parse(item)
            if block is None:
                raise _problem((*path, "type"), f"unknown block type {item['type']!r:.40}")
            block.validate_json()
        except (SlackObjectFormationError, TypeError, ValueError, AttributeError) as exc:
            detail = excerpt(str(exc) or type(exc).__name__)
            raise _problem(path, f"({item['type']}) {detail}") from exc
    return value
