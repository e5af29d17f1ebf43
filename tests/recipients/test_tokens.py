"""One-click unsubscribe tokens: made for one address and one category with the secret, read
back without a database; anything else (forged, cut short, edited to another category or
address, made with a secret relay no longer has) is refused."""

from __future__ import annotations

import base64
import re

import pytest

from relay.recipients.tokens import MAX_TOKEN_CHARS, UnsubscribeKeys, check_secret
from relay.secret import Secret

SECRET = Secret("Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE")
OTHER = Secret("mW7xC2vB9nQ4kL1pR8tY5uI3oE6aS0dF")
KEYS = UnsubscribeKeys(SECRET)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_a_token_reads_back_as_its_address_and_category() -> None:
    token = KEYS.sign("ada@example.com", "onboarding")
    assert KEYS.read(token) == ("ada@example.com", "onboarding")
    assert UnsubscribeKeys(SECRET).read(token) == ("ada@example.com", "onboarding")


def test_tokens_are_url_safe_and_differ_per_address_and_category() -> None:
    """Only base64url characters and dots: the token goes in a URL as it is."""
    tokens = {KEYS.sign(a, c) for a in ("ada@x.org", "bob@x.org") for c in ("news", "tips")}
    assert len(tokens) == 4
    assert all(set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
               for t in tokens)  # fmt: skip


def forged(token: str) -> dict[str, str]:
    """Every way of changing a good token that must be refused."""
    key_id, payload, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return {
        "mac changed": f"{key_id}.{payload}.{flipped}",
        "mac cut short": f"{key_id}.{payload}.{mac[:-1]}",
        "mac cut in half": f"{key_id}.{payload}.{mac[:21]}",
        "mac cut to 30 bytes": f"{key_id}.{payload}.{mac[:40]}",  # still canonical base64
        "mac cut to 24 bytes": f"{key_id}.{payload}.{mac[:32]}",
        "mac with more": f"{key_id}.{payload}.{mac}AAAA",
        "token cut short": token[:-10],
        "no mac": f"{key_id}.{payload}",
        "other category": f"{key_id}.{b64('newsletter' + chr(10) + 'ada@example.com')}.{mac}",
        "other address": f"{key_id}.{b64('onboarding' + chr(10) + 'bob@example.com')}.{mac}",
        "other key id": f"AAAAAAAA.{payload}.{mac}",
        "extra part": f"{token}.x",
        "padding added": f"{key_id}.{payload}==.{mac}",
        "not base64": f"{key_id}.{payload[:-1]}*.{mac}",
        "empty": "",
        "huge": "a" * (MAX_TOKEN_CHARS + 1),
    }


@pytest.mark.parametrize("how", list(forged(KEYS.sign("ada@example.com", "onboarding"))))
def test_a_changed_token_is_refused(how: str) -> None:
    token = forged(KEYS.sign("ada@example.com", "onboarding"))[how]
    assert KEYS.read(token) is None


def test_a_token_made_with_another_secret_is_refused() -> None:
    """Without the secret, no token can be made: another secret's is refused."""
    assert KEYS.read(UnsubscribeKeys(OTHER).sign("ada@example.com", "onboarding")) is None


def test_a_token_made_for_another_category_unsubscribes_from_that_one_only() -> None:
    """The category is part of what is signed: a newsletter link reads as newsletter."""
    token = KEYS.sign("ada@example.com", "newsletter")
    assert KEYS.read(token) == ("ada@example.com", "newsletter")


def test_rotation_keeps_old_links_working_and_signs_with_the_new_secret() -> None:
    """With the old secret as previous, its links still read; new ones use the new secret
    (and read without the old one); once the old secret is dropped, its links are refused."""
    old_link = UnsubscribeKeys(OTHER).sign("ada@example.com", "onboarding")
    rotating = UnsubscribeKeys(SECRET, OTHER)
    assert rotating.read(old_link) == ("ada@example.com", "onboarding")
    new_link = rotating.sign("bob@example.com", "onboarding")
    assert UnsubscribeKeys(SECRET).read(new_link) == ("bob@example.com", "onboarding")
    assert UnsubscribeKeys(SECRET).read(old_link) is None


def test_the_keys_never_show_the_secret() -> None:
    assert SECRET.reveal() not in repr(KEYS)
    assert SECRET.reveal() not in KEYS.sign("ada@example.com", "onboarding")


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("short", "too weak (5 characters"),
        ("a" * 64, "too weak (64 characters, 1 different)"),
        ("changeme" * 4, "too weak (32 characters, 7 different)"),
        (" Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE", "leading or trailing whitespace"),
        ('"Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE"', "wrapped in quotes"),
    ],
)
def test_a_weak_secret_is_refused_without_quoting_it(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as refused:
        check_secret(secret)
    assert secret.strip(' "') not in str(refused.value)


@pytest.mark.parametrize(
    "secret",
    ["Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE", "9f86d081884c7d659a2feaa0c55ad015",
     "dGhpcyBpcyAzMiByYW5kb20gYnl0ZXMhISEhISEhISE="],
)  # fmt: skip
def test_random_secrets_are_accepted(secret: str) -> None:
    """32 characters or more from a good alphabet: base64 or hex output of a random source."""
    check_secret(secret)
