"""The one-click link of an email and its headers, as RFC 8058 shapes them: one https URL in
angle brackets (a mailto beside it when configured) and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``; made only for an email to exactly one address."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from relay.errors import PayloadError
from relay.recipients.addresses import addresses
from relay.recipients.links import UnsubscribeLinks, UnsubscribeSend
from relay.recipients.tokens import UnsubscribeKeys
from relay.secret import Secret

KEYS = UnsubscribeKeys(Secret("Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE"))
LINKS = UnsubscribeLinks("https://relay.acme.example", KEYS)


def recipients(fields: Mapping[str, object]) -> dict[str, list[str]]:
    return {key: addresses(fields.get(key)) for key in ("to", "cc", "bcc")}


def test_the_headers_are_rfc_8058s() -> None:
    """``List-Unsubscribe: <https://…>`` and ``List-Unsubscribe-Post:
    List-Unsubscribe=One-Click``, nothing else; the URL's token reads back."""
    link = LINKS.link("ada@example.com", "onboarding")
    assert set(link.headers) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
    assert link.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.fullmatch(r"<(https://relay\.acme\.example/unsubscribe/([^>]+))>",
                         link.headers["List-Unsubscribe"])  # fmt: skip
    assert found is not None
    assert found[1] == link.url
    assert KEYS.read(found[2]) == ("ada@example.com", "onboarding")


def test_a_mailto_goes_after_the_https_link_when_configured() -> None:
    links = UnsubscribeLinks("https://relay.acme.example", KEYS, mailto="unsubscribe@acme.example")
    header = links.link("ada@example.com", "onboarding").headers["List-Unsubscribe"]
    https, mailto = header.split(", ")
    assert https.startswith("<https://relay.acme.example/unsubscribe/")
    assert mailto == "<mailto:unsubscribe@acme.example?subject=unsubscribe>"


def test_an_email_to_one_address_gets_its_link() -> None:
    """The link is for the (normalised) recipient, whatever the case or display name."""
    send = UnsubscribeSend("onboarding", LINKS, recipients)
    link = send.link({"to": "Ada <ADA@Example.com>"})
    token = link.url.rsplit("/", 1)[1]
    assert KEYS.read(token) == ("ada@example.com", "onboarding")


@pytest.mark.parametrize(
    "fields",
    [{"to": "ada@example.com, bob@example.com"}, {"to": "ada@example.com", "cc": "bob@x.org"},
     {"to": "ada@example.com", "bcc": ["bob@x.org"]}, {"to": ""}],
)  # fmt: skip
def test_an_email_to_more_or_fewer_than_one_address_gets_no_link(fields: dict[str, object]) -> None:
    """A link unsubscribes the address it names: on an email to several, each could unsubscribe
    another; so such an email is refused (its delivery is dead, with the reason)."""
    send = UnsubscribeSend("onboarding", LINKS, recipients)
    with pytest.raises(PayloadError, match="goes to exactly one address"):
        send.link(fields)


def test_a_recipient_that_is_no_address_gets_no_link() -> None:
    send = UnsubscribeSend("onboarding", LINKS, recipients)
    with pytest.raises(PayloadError, match="'not an address' is not an email address"):
        send.link({"to": "not an address"})
