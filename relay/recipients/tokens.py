"""One-click unsubscribe tokens: who may unsubscribe whom from what, checked without a database.

A token is ``<key id>.<payload>.<mac>``, each part base64url without padding:

- ``payload``: the category and the (normalised) address, ``category \\n address`` in UTF-8;
- ``mac``: HMAC-SHA256 over a fixed label, the key id, the category and the address, keyed by
  ``RELAY_UNSUBSCRIBE_SECRET`` (all 32 bytes: 43 characters);
- ``key id``: 8 characters of a hash of the secret, naming which secret made the token. During a
  rotation (``RELAY_UNSUBSCRIBE_SECRET_PREVIOUS``), a link made with the previous secret still
  works; one made with a secret relay no longer has is refused.

``read`` checks a token in constant time per key (``hmac.compare_digest``) and gives the address
and category it was made for, or None: a token changed in any byte (another address, another
category, cut short) is refused, and without the secret none can be made. A token names one
address and one category, so it unsubscribes nobody else from nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re

from relay.recipients.addresses import CATEGORY, normalise
from relay.secret import Secret

MIN_SECRET_CHARS = 32
MIN_SECRET_BITS = 128
MIN_DISTINCT = 8
MAX_TOKEN_CHARS = 1024  # an address of 320 characters in base64, and the rest, fit easily
_LABEL = b"relay one-click unsubscribe v1"
_PART = re.compile(r"[A-Za-z0-9_-]+")


def check_secret(value: str) -> None:
    """ValueError (never quoting the value) unless ``value`` is a usable unsubscribe secret: at
    least 32 characters, without blanks or quotes around it, that hold 128 bits if they are
    random (32 hex digits, 22 of base64) and are not made of a handful of characters repeated
    (``aaaa…``, ``changeme…``). It cannot tell a random secret from a made-up one: use one."""
    if value != value.strip():
        raise ValueError("has leading or trailing whitespace; remove it")
    if value and (value[0] in "'\"" or value[-1] in "'\""):
        raise ValueError("is wrapped in quotes; remove the quotes")
    distinct = len(set(value))
    if len(value) < MIN_SECRET_CHARS or distinct < MIN_DISTINCT or _bits(value) < MIN_SECRET_BITS:
        raise ValueError(
            f"is too weak ({len(value)} characters, {distinct} different): use at least"
            f" {MIN_SECRET_CHARS} random characters, e.g. the output of `openssl rand -base64 32`"
        )


def _bits(value: str) -> float:
    """What ``value`` would hold if each character were drawn at random from its alphabet (hex
    digits, or the classes of characters it uses)."""
    if all(c in "0123456789abcdefABCDEF" for c in value):
        return 4.0 * len(value)
    classes = (str.islower, str.isupper, str.isdigit)
    pool = sum(
        size for size, test in zip((26, 26, 10), classes, strict=True) if any(map(test, value))
    )
    pool += 33 if any(not c.isalnum() for c in value) else 0
    return len(value) * math.log2(max(pool, 2))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url ``text``, or None."""
    if not _PART.fullmatch(text) or len(text) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if _b64(raw) == text else None  # one spelling per token: no spare bits set


class UnsubscribeKeys:
    """The secret that signs new tokens, and the previous one (during a rotation) that still
    verifies old ones."""

    __slots__ = ("_keys", "current_id")

    def __init__(self, current: Secret, previous: Secret | None = None) -> None:
        secrets = [current] + ([previous] if previous else [])
        self._keys = {self._id(s): s.reveal().encode("utf-8") for s in secrets}
        self.current_id = self._id(current)

    def __repr__(self) -> str:
        return f"UnsubscribeKeys(current={self.current_id!r}, keys={len(self._keys)})"

    @staticmethod
    def _id(secret: Secret) -> str:
        digest = hashlib.sha256(b"relay unsubscribe key id\n" + secret.reveal().encode("utf-8"))
        return _b64(digest.digest()[:6])

    def _mac(self, key_id: str, category: str, address: str) -> str:
        message = b"\n".join([_LABEL, key_id.encode(), category.encode(), address.encode()])
        return _b64(hmac.new(self._keys[key_id], message, hashlib.sha256).digest())

    def sign(self, address: str, category: str) -> str:
        """The token for ``address`` (normalised) and ``category``, with the current secret."""
        payload = _b64(f"{category}\n{address}".encode())
        return f"{self.current_id}.{payload}.{self._mac(self.current_id, category, address)}"

    def read(self, token: str) -> tuple[str, str] | None:
        """(address, category) of a token one of the keys made; None for anything else."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        key_id, payload, mac = token.split(".")
        raw = _unb64(payload)
        if key_id not in self._keys or raw is None or _unb64(mac) is None:
            return None
        try:
            category, newline, address = raw.decode("utf-8").partition("\n")
        except UnicodeDecodeError:
            return None
        expected = self._mac(key_id, category, address)
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return None
        if not newline or not CATEGORY.fullmatch(category) or normalise(address) != address:
            return None  # made by these keys, so never: a guard, not a check anyone can reach
        return address, category
