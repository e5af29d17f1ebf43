"""The one-click unsubscribe link of an email, and the headers that carry it (RFC 8058).

An email of a category (a send with ``unsubscribe: onboarding``) goes to one address; relay makes
the link ``<RELAY_PUBLIC_URL>/unsubscribe/<token>`` for that address and category
(``relay.recipients.tokens``), gives it to the templates as ``unsubscribe_url``, and adds to the
email::

    List-Unsubscribe: <https://relay.example/unsubscribe/TOKEN>, <mailto:ME?subject=unsubscribe>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

(the ``mailto:`` only when ``RELAY_UNSUBSCRIBE_MAILTO`` is set). A mailbox provider that offers
"unsubscribe" POSTs ``List-Unsubscribe=One-Click`` to the link, and relay's endpoint
(``relay.server.unsubscribe``) adds the suppression at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from relay.errors import PayloadError
from relay.recipients.addresses import normalise
from relay.recipients.tokens import UnsubscribeKeys

PATH = "/unsubscribe/"  # what relay serves; a link is the public URL, this, and the token
ONE_CLICK = "List-Unsubscribe=One-Click"
Recipients = Callable[[Mapping[str, Any]], Mapping[str, list[str]]]
"""An email sink's recipients of a rendered payload, by field (``to`` first): ``SinkType``'s."""


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Makes links (with the public URL) and reads their tokens (with the keys).

    ``placeholder``: links for ``relay check`` and previews without the secret; they look like
    the real ones and work nowhere (the endpoint refuses to serve with them)."""

    public_url: str | None
    keys: UnsubscribeKeys
    mailto: str | None = None
    placeholder: bool = False

    def link(self, address: str, category: str) -> Link:
        """The link and headers for ``address`` (normalised) and ``category``."""
        base = self.public_url or "https://RELAY_PUBLIC_URL"
        url = f"{base}{PATH}{self.keys.sign(address, category)}"
        targets = [f"<{url}>"]
        if self.mailto:
            targets.append(f"<mailto:{quote(self.mailto, safe='@')}?subject=unsubscribe>")
        headers = {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}
        return Link(url, headers)

    def read(self, token: str) -> tuple[str, str] | None:
        """(address, category) of a valid token; None for anything else."""
        return self.keys.read(token)


@dataclass(frozen=True)
class UnsubscribeSend:
    """A send of a category: the links to make, and how its sink names the recipients."""

    category: str
    links: UnsubscribeLinks | None
    recipients: Recipients

    def link(self, fields: Mapping[str, Any]) -> Link:
        """The link of the email the rendered ``fields`` address; PayloadError unless that is
        exactly one address (a link unsubscribes the address it names, so an email to several
        would let each of them unsubscribe the first)."""
        found = [a for addresses in self.recipients(fields).values() for a in addresses]
        what = f"unsubscribe: {self.category}"
        if len(found) != 1:
            raise PayloadError(
                f"{what}: an email with a one-click unsubscribe link goes to exactly one"
                f" address (its link unsubscribes that address); to, cc and bcc hold {len(found)}"
            )
        address = normalise(found[0])
        if address is None:
            raise PayloadError(f"{what}: {found[0]!r} is not an email address", path=("to",))
        if self.links is None:
            raise PayloadError(f"{what}: RELAY_UNSUBSCRIBE_SECRET is not set")
        return self.links.link(address, self.category)
