"""The Standard Webhooks / Svix signing scheme, both ways: one module for every use of it.

Scheme (Standard Webhooks v1, symmetric): the sender signs ``{id}.{timestamp}.{raw body}`` with
HMAC-SHA256, keyed by the base64-decoded part of the ``whsec_...`` secret, and sends
``svix-signature: v1,<base64> [v1,<base64> ...]`` (or ``webhook-signature``). Used by:

- the ``svix`` and ``standard-webhooks`` sources, to verify (``SvixVerifier``): any ``v1`` entry
  matching any configured secret (current, or previous while rotating) accepts the request.
  ``webhook-*`` header names are accepted too; per header, the ``svix-*`` name wins when both are
  present (as in the svix library). ``header_prefixes=("webhook",)`` reads only the ``webhook-*``
  names (a Standard Webhooks sender);
- the ``http`` sink, to sign what it sends (``signing_key`` once, ``sign_with`` per request);
- ``relay send-test``, to sign a sample event as Clerk would (``sign``).

One rule for every secret, inbound or outbound (``decode_secret``): ``whsec_`` + base64 of a key
of at least ``MIN_KEY_BYTES``, its ``=`` padding optional (as in the Standard Webhooks reference
library). The check is done here, not with ``svix.webhooks.Webhook``, because
the svix library has no clock to inject and lets hostile headers escape as ``ValueError``s. Every
failure of ``SvixVerifier.verify`` is a ``VerificationError`` with a short reason that never holds
a secret or an expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from relay.errors import VerificationError
from relay.secret import Secret

__all__ = [
    "SvixVerifier",
    "VerifiedMessage",
    "check_unprefixed_secret",
    "decode_secret",
    "parse_signing_secret",
    "prefixed",
    "sign",
    "sign_with",
    "signing_key",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MIN_KEY_BYTES = 16
MAX_ID_CHARS = 256
MAX_SIGNATURE_HEADER_CHARS = 8 * 1024
MAX_SIGNATURES = 32

_ID_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or control characters
_TIMESTAMP_RE = re.compile(r"0|[1-9][0-9]{0,17}")  # canonical decimal Unix seconds


def parse_signing_secret(value: str) -> Secret:
    """Validate a Svix signing secret (``whsec_`` + base64 of the key) and wrap it in a ``Secret``.

    The decoded key must be at least 16 bytes (128 bits, the floor for an HMAC-SHA256 key). Svix and
    Clerk generate 24-byte keys, but Svix's own documented test secret
    (``whsec_plJ3nmyCDGBKInavdOK15jsl``) is 18 bytes, so requiring 24 would reject a secret that the
    Svix libraries accept. Surrounding whitespace and quotes are rejected, not stripped: they mean
    the value was pasted wrongly, and saying so beats guessing. Raises ``ValueError`` with a message
    that never contains the secret.
    """
    decode_secret(value, hint=_SENDER_HINT)
    return Secret(value)


# Where an inbound secret comes from, for the error about a missing prefix.
_SENDER_HINT = " (copy it from the Clerk dashboard: Webhooks → endpoint → Signing Secret)"


def decode_secret(value: str, *, hint: str = "") -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret, or ValueError saying what is wrong (never
    quoting the value; ``hint`` follows the missing-prefix message). The one rule for a signing
    secret, inbound or outbound: at least ``MIN_KEY_BYTES``."""
    if not value:
        raise ValueError("signing secret is empty")
    if value != value.strip():
        raise ValueError("signing secret has leading or trailing whitespace; remove it")
    if value[0] in "'\"" or value[-1] in "'\"":
        raise ValueError("signing secret is wrapped in quotes; remove the quotes")
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"signing secret must start with 'whsec_'{hint}")
    return _decode_key(value[len(SECRET_PREFIX) :], " after 'whsec_'")


def _decode_key(encoded: str, where: str) -> bytes:
    """The key in standard base64 ``encoded`` (its ``=`` padding optional); ValueError else."""
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise ValueError(f"signing secret is not valid base64{where}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"signing secret is too short ({len(key)} bytes; expected at least "
            f"{MIN_KEY_BYTES}, Clerk's are 24)"
        )
    return key


def check_unprefixed_secret(value: str) -> None:
    """As ``decode_secret``, but the ``whsec_`` prefix may be left out (some Standard Webhooks
    senders show only the base64 part); ValueError says what is wrong."""
    if value.startswith(SECRET_PREFIX) or not value or value != value.strip():
        decode_secret(value)
    elif value[0] in "'\"" or value[-1] in "'\"":
        raise ValueError("signing secret is wrapped in quotes; remove the quotes")
    else:
        _decode_key(value, "")


def prefixed(secret: Secret) -> Secret:
    """The secret in ``whsec_`` form, as the verifier and ``sign`` take it."""
    value = secret.reveal()
    return secret if value.startswith(SECRET_PREFIX) else Secret(SECRET_PREFIX + value)


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of a checked secret: decode it once, sign with it many times."""
    return decode_secret(secret.reveal())


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.digest()


def sign_with(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature entry for ``body``, with a key from ``signing_key``."""
    return "v1," + base64.b64encode(_signature(key, message_id, timestamp, body)).decode("ascii")


def sign(secret: Secret, message_id: str, timestamp: int, body: bytes) -> str:
    """Sign ``body`` as Svix would; returns one ``v1,<base64>`` signature entry."""
    return sign_with(signing_key(secret), message_id, timestamp, body)


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """What a verified request tells about itself: the Svix message id and the signed timestamp."""

    message_id: str
    timestamp: int


class SvixVerifier:
    """Checks Svix signatures against the current secret and, while rotating, previous ones."""

    __slots__ = ("_clock", "_keys", "_prefixes", "_tolerance_s")

    def __init__(
        self,
        secrets: Sequence[Secret],
        *,
        tolerance_s: int = 300,
        clock: Callable[[], float] = time.time,
        header_prefixes: Sequence[str] = ("svix", "webhook"),
    ) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is required")
        if tolerance_s < 0:
            raise ValueError("tolerance_s must not be negative")
        if not header_prefixes or not set(header_prefixes) <= {"svix", "webhook"}:
            raise ValueError("header_prefixes must be 'svix' and/or 'webhook'")
        self._keys = tuple(signing_key(s) for s in secrets)
        self._tolerance_s = tolerance_s
        self._clock = clock
        self._prefixes = tuple(header_prefixes)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedMessage:
        """Return the message's id and timestamp if signed by a known secret; else raise."""
        found = _pick_headers(headers)
        id_name, message_id = _required(found, "id", self._prefixes)
        ts_name, ts_text = _required(found, "timestamp", self._prefixes)
        sig_name, sig_header = _required(found, "signature", self._prefixes)

        if len(message_id) > MAX_ID_CHARS:
            raise VerificationError(f"{id_name} header too long")
        if not _ID_RE.fullmatch(message_id):
            raise VerificationError(f"{id_name} header has invalid characters")
        if not _TIMESTAMP_RE.fullmatch(ts_text):
            raise VerificationError(f"{ts_name} header is not an integer")
        timestamp = int(ts_text)
        now = self._clock()
        if timestamp < now - self._tolerance_s:
            raise VerificationError("timestamp too old")
        if timestamp > now + self._tolerance_s:
            raise VerificationError("timestamp in the future")
        if len(sig_header) > MAX_SIGNATURE_HEADER_CHARS:
            raise VerificationError(f"{sig_name} header too long")
        entries = [entry for entry in sig_header.split(" ") if entry]
        if len(entries) > MAX_SIGNATURES:
            raise VerificationError(f"too many signatures in {sig_name} header")

        expected = [_signature(key, message_id, timestamp, body) for key in self._keys]
        for entry in entries:
            version, comma, encoded = entry.partition(",")
            if version != "v1" or not comma:
                continue  # another scheme (v1a is ed25519) or a malformed entry
            try:
                given = base64.b64decode(encoded, validate=True)
            except ValueError:  # binascii.Error, or non-ASCII characters
                continue
            # Compare against every key, so timing does not depend on which key matched.
            matches = [hmac.compare_digest(given, digest) for digest in expected]
            if any(matches):
                return VerifiedMessage(message_id=message_id, timestamp=timestamp)
        raise VerificationError("no matching signature")


_NAMES = frozenset(
    f"{prefix}-{part}"
    for prefix in ("svix", "webhook")
    for part in ("id", "timestamp", "signature")
)


def _pick_headers(headers: Mapping[str, str]) -> dict[str, object]:
    """The six header names we read, lower-cased; for a repeated name the last value wins."""
    found: dict[str, object] = {}
    for key, value in headers.items():
        if isinstance(key, str) and (name := key.lower()) in _NAMES:
            found[name] = value
    return found


def _required(found: Mapping[str, object], part: str, prefixes: Sequence[str]) -> tuple[str, str]:
    for name in (f"{prefix}-{part}" for prefix in prefixes):
        if name in found:
            value = found[name]
            if not isinstance(value, str):
                raise VerificationError(f"malformed {name} header")
            if not value:
                raise VerificationError(f"empty {name} header")
            return name, value
    raise VerificationError(f"missing {prefixes[0]}-{part} header")
