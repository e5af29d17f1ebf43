"""A string that never shows itself in a repr, a log line or an error text; the settings field
that holds one; and redaction of secrets out of texts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer


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


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return Secret(value)


SecretStr = Annotated[
    Secret, BeforeValidator(_to_secret), PlainSerializer(lambda s: repr(s), return_type=str)
]
"""The one settings field type for a secret (an API key, a signing secret, a URL holding a token):
redacted in every repr, log and error. Its model needs ``arbitrary_types_allowed``. A field whose
value has a form to check adds ``checked(...)``: ``Annotated[SecretStr, checked(parse_key)]``."""


def checked(check: Callable[[str], object]) -> AfterValidator:
    """A validator for a ``SecretStr`` field: ``check(value)`` raises ValueError (whose text must
    never quote the value) when the secret is malformed."""

    def run(secret: Secret) -> Secret:
        check(secret.reveal())
        return secret

    return AfterValidator(run)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``text`` with ``[redacted]``."""
    for value in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


def secret_fragments(value: str) -> set[str]:
    """The secret and the parts of it an upstream may quote back on their own: a URL's password,
    path (a Slack webhook's token is its last segment) and query values; each long word of a
    header value such as ``Bearer <token>``. Short, common pieces are left out."""
    found = {value}
    found.update(word for word in value.split() if len(word) >= 8)
    if "://" in value and not value.startswith("sqlite:"):  # a file path is no secret
        try:
            parts = urlsplit(value)
        except ValueError:
            return found
        found |= url_credentials(value)
        if len(parts.path) >= 8:
            found.add(parts.path)
        found.update(seg for seg in parts.path.split("/") if len(seg) >= 12)
    return found


def url_credentials(url: str) -> set[str]:
    """The credentials an ordinary URL may carry: its password and its query values."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found = {password} if password else set()
    found.update(v for _, v in parse_qsl(parts.query) if len(v) >= 6)
    return found
