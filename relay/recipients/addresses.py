"""Email addresses as relay compares them, and the suppression list's records.

``normalise`` is the one way an address is compared, stored and put in a token: the address
part of ``Name <address>``, surrounding blanks trimmed, lower-cased. It goes no further, on
purpose: dots and ``+tags`` in the local part are Gmail's rule, not every provider's (at others
``a.b@`` and ``ab@`` are two people, and a tag is how a user tells senders apart); ``ß`` is not
``ss`` (so ``lower``, never ``casefold``); an internationalised domain is not converted to
punycode (Python's codec is IDNA 2003, which maps some names onto others). Two spellings this
leaves apart are at worst suppressed apart; a rule that merged two mailboxes would suppress
someone who never asked.

A suppression holds an address back from all email (``ALL``: a hard bounce, a complaint) or from
one category (an unsubscribe from ``onboarding``), for a ``Reason``, with the event that caused it
and when. One row per (address, scope).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

ALL = "all"  # the scope of a suppression that holds back every email to the address
MAX_ADDRESS_CHARS = 320  # RFC 5321: a 64-character local part, @, a 255-character domain
CATEGORY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_COMMA_OUTSIDE_QUOTES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')


class Reason(enum.StrEnum):
    BOUNCED = "bounced"  # a hard (permanent) bounce: the mailbox does not exist
    COMPLAINED = "complained"  # the recipient marked an email as spam
    UNSUBSCRIBED = "unsubscribed"  # the recipient used an unsubscribe link
    MANUAL = "manual"  # ops added it (`relay suppressions add`)


def addresses(value: object) -> list[str]:
    """Rendered recipients as a list: a list, or one string split on commas outside quotes
    (``"Doe, Jane" <jane@example.com>, ada@example.com`` is two)."""
    items = value if isinstance(value, list | tuple) else [] if value is None else [value]
    parts = (p.strip() for item in items for p in _COMMA_OUTSIDE_QUOTES.split(str(item)))
    return [p for p in parts if p]


def normalise(raw: object) -> str | None:
    """The address in ``raw`` as relay compares it, or None when it holds none (no ``@``, blanks
    or control characters inside, longer than an address can be)."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text.endswith(">") and "<" in text:  # Name <address>
        text = text[text.rindex("<") + 1 : -1].strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or len(text) > MAX_ADDRESS_CHARS:
        return None
    if _BLANK_OR_CONTROL.search(text) or any(c in domain for c in '<>,;()[]\\"@'):
        return None
    return text.lower()


def scope_problem(scope: str) -> str | None:
    """Why ``scope`` is not a suppression scope (``all``, or a category name), or None."""
    if scope == ALL or CATEGORY.fullmatch(scope):
        return None
    return (
        f"'{scope}' is not a scope: write all, or a category name (lower-case letters, digits,"
        " '-', '_' and '.', e.g. onboarding)"
    )


@dataclass(frozen=True, slots=True)
class Suppression:
    """One address held back: from every email (scope ``all``) or from one category."""

    address: str  # normalised
    scope: str
    reason: Reason
    event_id: str | None  # the sender's message id of the event that caused it, if an event did
    created_at: float  # Unix seconds

    def describe(self) -> str:
        """The reason a delivery held back by this suppression is given, in words."""
        when = datetime.fromtimestamp(self.created_at, UTC).isoformat(timespec="seconds")
        what = "all email" if self.scope == ALL else f"'{self.scope}' email"
        cause = f", event {self.event_id}" if self.event_id else ""
        moment = when.replace("+00:00", "Z")
        return f"{self.address} is suppressed for {what}: {self.reason} at {moment}{cause}"


class SuppressionList(Protocol):
    """The suppression list a store keeps (``relay.store``): looked up before each email, added
    to by the ``suppression`` sink and the unsubscribe endpoint, managed by ``relay
    suppressions``."""

    async def suppressions_for(
        self, addresses: Collection[str], scopes: Collection[str]
    ) -> list[Suppression]:
        """The suppressions of any of the (normalised) ``addresses`` in any of the ``scopes``:
        one probe of the (address, scope) key each, never a scan."""

    async def add_suppression(self, suppression: Suppression) -> bool:
        """Add it; False (and nothing changed) when the address already has that scope."""

    async def remove_suppressions(self, address: str, scope: str | None = None) -> int:
        """Remove the address's suppression of ``scope`` (every scope when None); how many."""

    async def list_suppressions(
        self,
        *,
        address: str | None = None,
        scope: str | None = None,
        reason: Reason | None = None,
        limit: int = 100,
    ) -> list[Suppression]:
        """Suppressions newest first, filtered by each argument given."""
