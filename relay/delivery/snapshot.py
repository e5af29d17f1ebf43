"""What an attempt rendered, as it is stored with the attempt (``Attempt.rendered``), so that
``relay explain`` can show what was sent beside what the current rules would send now.

The rendered payload (the template's parts and the send's fields; never a sink's settings) as
JSON, with every secret the config knows redacted in each string (a ``${VAR}`` in a send field
could hold one), ASCII-only (so a NUL or a lone surrogate from hostile event data stores on both
databases) and bounded: long strings are clipped, shorter and shorter, until the whole fits in
``MAX_STORED_CHARS``. ``relay explain`` passes today's render through the same function, so a
redaction or a clip never shows as a difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from relay.secret import redact

__all__ = ["MAX_STORED_CHARS", "redacted", "snapshot"]

MAX_STORED_CHARS = 32 * 1024
_MIN_STRING_CHARS = 64


def snapshot(payload: Mapping[str, Any], secrets: Iterable[str]) -> str:
    """The payload as stored: redacted, JSON, at most ``MAX_STORED_CHARS`` characters. A payload
    nested deeper than Python's recursion allows (hostile event data can be) is stored as a note
    saying so: what an attempt sent is never worth failing the attempt's record."""
    try:
        clean = redacted(payload, secrets)
    except RecursionError:
        return _dumps({"not_stored": "the message is nested too deep to store"})
    limit = MAX_STORED_CHARS
    while True:
        text = _dumps(_walk(clean, lambda s: _clip(s, limit)))  # noqa: B023 (used at once)
        if len(text) <= MAX_STORED_CHARS:
            return text
        if limit <= _MIN_STRING_CHARS:  # many small parts: keep their shape, not their content
            return _dumps({"not_stored": f"the message is too large to store ({len(text)} chars)"})
        limit //= 2


def redacted(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with each known secret in each of its strings shown as ``[redacted]``."""
    known = [s for s in secrets if s]
    return _walk(value, lambda text: redact(text, known))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, sort_keys=True, default=str)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters not stored]"


def _walk(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it (keys left as they are)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Mapping):
        return {str(key): _walk(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, change) for item in value]
    return value
