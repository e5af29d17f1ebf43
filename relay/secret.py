"""A string that never shows itself in a repr, a log line or an error text."""

from __future__ import annotations

from collections.abc import Iterable


class Secret:
    """Wraps a secret value; ``str()``/``repr()`` are redacted, ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``text`` with ``[redacted]``."""
    for value in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text
