"""Specification of inbound Svix signature verification (relay.sources.signing)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from svix.webhooks import Webhook

from relay.errors import VerificationError
from relay.secret import Secret
from relay.sources.signing import SvixVerifier, VerifiedMessage, parse_signing_secret, sign
from tests.sources.helpers import SVIX_VECTORS

NOW = 1_700_000_000
KEY = bytes(range(24))
SECRET = Secret("whsec_" + base64.b64encode(KEY).decode())
OLD_SECRET = Secret("whsec_" + base64.b64encode(bytes(range(100, 124))).decode())
OTHER_SECRET = Secret("whsec_" + base64.b64encode(b"x" * 24).decode())
BODY = b'{"type":"user.created","data":{"id":"user_1"}}'
MSG_ID = "msg_2abcDEF"


def frozen(now: float = NOW) -> SvixVerifier:
    return SvixVerifier([SECRET], clock=lambda: now)


def signed(
    body: bytes = BODY,
    *,
    msg_id: str = MSG_ID,
    ts: int = NOW,
    secret: Secret = SECRET,
    prefix: str = "svix",
) -> dict[str, str]:
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(ts),
        f"{prefix}-signature": sign(secret, msg_id, ts, body),
    }


def reason(verifier: SvixVerifier, body: bytes, headers: Mapping[str, object]) -> str:
    with pytest.raises(VerificationError) as info:
        verifier.verify(body, headers)  # type: ignore[arg-type]
    return str(info.value)


# --- test vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "expected"), SVIX_VECTORS)
def test_sign_reproduces_svix_vectors(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    """sign() reproduces Svix's documented signatures exactly."""
    assert sign(parse_signing_secret(secret), msg_id, ts, body) == expected


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "expected"), SVIX_VECTORS)
def test_verify_accepts_svix_vectors_with_frozen_clock(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    """verify() accepts Svix's documented vectors when the clock is frozen at their timestamp."""
    verifier = SvixVerifier([parse_signing_secret(secret)], clock=lambda: ts)
    headers = {"svix-id": msg_id, "svix-timestamp": str(ts), "svix-signature": expected}
    assert verifier.verify(body, headers) == VerifiedMessage(message_id=msg_id, timestamp=ts)


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "expected"), SVIX_VECTORS)
def test_vectors_fail_on_any_byte_change(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    """A trailing newline or re-serialised JSON breaks a Svix vector's signature."""
    verifier = SvixVerifier([parse_signing_secret(secret)], clock=lambda: ts)
    headers = {"svix-id": msg_id, "svix-timestamp": str(ts), "svix-signature": expected}
    assert reason(verifier, body + b"\n", headers) == "no matching signature"
    assert reason(verifier, body.replace(b"{", b"{ ", 1), headers) == "no matching signature"


# --- accepted requests ----------------------------------------------------------------------------


def test_verified_message_is_frozen() -> None:
    """VerifiedMessage is an immutable value."""
    message = frozen().verify(BODY, signed())
    assert message == VerifiedMessage(message_id=MSG_ID, timestamp=NOW)
    with pytest.raises(AttributeError):
        message.timestamp = 0  # type: ignore[misc]


def test_previous_secret_is_accepted_during_rotation() -> None:
    """A message signed with the previous secret verifies while both are configured."""
    verifier = SvixVerifier([SECRET, OLD_SECRET], clock=lambda: NOW)
    assert verifier.verify(BODY, signed(secret=OLD_SECRET)).message_id == MSG_ID
    assert verifier.verify(BODY, signed(secret=SECRET)).message_id == MSG_ID


def test_any_matching_entry_is_enough() -> None:
    """Of several signature entries, one matching (here the second) accepts the message."""
    headers = signed()
    headers["svix-signature"] = " ".join(
        [sign(OTHER_SECRET, MSG_ID, NOW, BODY), headers["svix-signature"]]
    )
    assert frozen().verify(BODY, headers).message_id == MSG_ID


def test_unknown_versions_and_malformed_entries_are_skipped() -> None:
    """v1a, v2, comma-less, bad-base64 entries and double spaces are skipped, not fatal."""
    good = sign(SECRET, MSG_ID, NOW, BODY)
    digest_b64 = good.split(",", 1)[1]
    junk = ["v1a,abc=", f"v2,{digest_b64}", "v1", "nocomma", "v1,!!!", "v1,", ",", "v1,é"]
    headers = signed() | {"svix-signature": "  ".join([*junk, good])}
    assert frozen().verify(BODY, headers).message_id == MSG_ID


def test_webhook_header_names_are_accepted() -> None:
    """The webhook-* header names carry the same scheme."""
    assert frozen().verify(BODY, signed(prefix="webhook")).message_id == MSG_ID


def test_svix_headers_win_over_webhook_headers() -> None:
    """When both names are present, the svix-* value is the one checked."""
    good_svix = signed() | {
        "webhook-id": "msg_other",
        "webhook-timestamp": "x",
        "webhook-signature": "v1,AAAA",
    }
    assert frozen().verify(BODY, good_svix).message_id == MSG_ID
    good_webhook = signed(prefix="webhook") | {"svix-signature": "v1,AAAA"}
    assert reason(frozen(), BODY, good_webhook) == "no matching signature"


def test_header_names_are_case_insensitive() -> None:
    """Mixed-case header names in a plain dict are found."""
    headers = {k.title(): v for k, v in signed().items()}
    assert frozen().verify(BODY, headers).message_id == MSG_ID


def test_starlette_headers_last_duplicate_wins() -> None:
    """With a Starlette Headers object, a repeated header's last value is used, as in svix."""
    raw = [(k.encode(), v.encode()) for k, v in signed().items()]
    headers = Headers(raw=[(b"svix-signature", b"v1,AAAA"), *raw])
    assert frozen().verify(BODY, headers).message_id == MSG_ID
    headers = Headers(raw=[*raw, (b"svix-signature", b"v1,AAAA")])
    assert reason(frozen(), BODY, headers) == "no matching signature"


def test_non_utf8_body_is_verified_as_bytes() -> None:
    """A body that is not UTF-8 is signed and verified over its raw bytes."""
    body = b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"
    assert frozen().verify(body, signed(body)).message_id == MSG_ID
    assert reason(frozen(), body + b"\x00", signed(body)) == "no matching signature"


def test_empty_body_is_verified() -> None:
    """An empty body is a valid signed content."""
    assert frozen().verify(b"", signed(b"")).message_id == MSG_ID


def test_limits_themselves_are_accepted() -> None:
    """A 256-character id and 32 signature entries are within limits."""
    long_id = "m" * 256
    headers = signed(msg_id=long_id)
    headers["svix-signature"] = " ".join(["v1,AAAA"] * 31 + [headers["svix-signature"]])
    assert frozen().verify(BODY, headers).message_id == long_id


# --- rejected requests ----------------------------------------------------------------------------


def _without(*names: str) -> dict[str, str]:
    return {k: v for k, v in signed().items() if k not in names}


GOOD_SIG = sign(SECRET, MSG_ID, NOW, BODY)

REJECTIONS: list[tuple[str, Mapping[str, object], str]] = [
    ("no headers", {}, "missing svix-id header"),
    ("no id", _without("svix-id"), "missing svix-id header"),
    ("no timestamp", _without("svix-timestamp"), "missing svix-timestamp header"),
    ("no signature", _without("svix-signature"), "missing svix-signature header"),
    ("empty id", signed() | {"svix-id": ""}, "empty svix-id header"),
    ("empty webhook id", signed(prefix="webhook") | {"webhook-id": ""}, "empty webhook-id header"),
    ("empty timestamp", signed() | {"svix-timestamp": ""}, "empty svix-timestamp header"),
    ("empty signature", signed() | {"svix-signature": ""}, "empty svix-signature header"),
    ("svix id empty", signed(prefix="webhook") | {"svix-id": ""}, "empty svix-id header"),
    ("id not str", signed() | {"svix-id": None}, "malformed svix-id header"),
    (
        "sig bytes",
        signed() | {"svix-signature": GOOD_SIG.encode()},
        "malformed svix-signature header",
    ),
    ("id too long", signed(msg_id="m" * 257), "svix-id header too long"),
    ("id space", signed(msg_id="msg 1"), "svix-id header has invalid characters"),
    ("id newline", signed(msg_id="msg\n1"), "svix-id header has invalid characters"),
    ("id unicode", signed(msg_id="msg_é"), "svix-id header has invalid characters"),
    ("id surrogate", signed() | {"svix-id": "\ud800"}, "svix-id header has invalid characters"),
    *[
        (f"ts {ts!r}", signed() | {"svix-timestamp": ts}, "svix-timestamp header is not an integer")
        for ts in [
            "abc",
            "1.5",
            f"{NOW}.0",
            f"+{NOW}",
            f"-{NOW}",
            f" {NOW}",
            f"{NOW}\n",
            f"0{NOW}",
            "1_700_000_000",
            "1e9",
            "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits
            "9" * 19,
            "9" * 5000,
        ]
    ],
    ("old", signed(ts=NOW - 3600), "timestamp too old"),
    ("zero", signed(ts=0), "timestamp too old"),
    ("future", signed(ts=NOW + 3600), "timestamp in the future"),
    (
        "sig too long",
        signed() | {"svix-signature": "v1,A" * 2048 + " "},
        "svix-signature header too long",
    ),
    (
        "too many entries",
        signed() | {"svix-signature": " ".join(["v1,AAAA"] * 32 + [GOOD_SIG])},
        "too many signatures in svix-signature header",
    ),
    ("wrong secret", signed(secret=OTHER_SECRET), "no matching signature"),
    ("wrong id", signed() | {"svix-id": "msg_other"}, "no matching signature"),
    ("wrong ts", signed() | {"svix-timestamp": str(NOW + 1)}, "no matching signature"),
    ("only v1a", signed() | {"svix-signature": "v1a," + GOOD_SIG[3:]}, "no matching signature"),
    ("v2 prefix", signed() | {"svix-signature": "v2," + GOOD_SIG[3:]}, "no matching signature"),
    ("no comma", signed() | {"svix-signature": "v1" + GOOD_SIG[3:]}, "no matching signature"),
    ("bad b64", signed() | {"svix-signature": "v1,!!!"}, "no matching signature"),
    ("unpadded", signed() | {"svix-signature": GOOD_SIG.rstrip("=")}, "no matching signature"),
    ("truncated", signed() | {"svix-signature": GOOD_SIG[:-8]}, "no matching signature"),
    ("spaces only", signed() | {"svix-signature": "   "}, "no matching signature"),
]


@pytest.mark.parametrize(
    ("headers", "expected"), [(h, r) for _, h, r in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_rejection_reasons(headers: Mapping[str, object], expected: str) -> None:
    """Each malformed or forged request is refused with its exact, short reason."""
    message = reason(frozen(), BODY, headers)
    assert message == expected
    assert SECRET.reveal() not in message
    assert GOOD_SIG[3:] not in message


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [
        (-301, "timestamp too old"),
        (-300, None),
        (0, None),
        (300, None),
        (301, "timestamp in the future"),
    ],
)
def test_tolerance_edges(offset_s: int, expected: str | None) -> None:
    """A timestamp exactly 300 s old or ahead is accepted; 301 s is refused."""
    headers = signed(ts=NOW + offset_s)
    if expected is None:
        assert frozen().verify(BODY, headers).timestamp == NOW + offset_s
    else:
        assert reason(frozen(), BODY, headers) == expected


def test_tolerance_is_configurable_and_clock_fractional() -> None:
    """tolerance_s sets the window; a fractional clock is compared exactly."""
    verifier = SvixVerifier([SECRET], tolerance_s=10, clock=lambda: NOW + 10.5)
    assert reason(verifier, BODY, signed()) == "timestamp too old"
    assert SvixVerifier([SECRET], tolerance_s=10, clock=lambda: NOW + 10.0).verify(BODY, signed())


def test_verifier_rejects_bad_configuration() -> None:
    """No secret, a malformed secret or a negative tolerance fails at construction."""
    with pytest.raises(ValueError, match="at least one signing secret is required"):
        SvixVerifier([])
    with pytest.raises(ValueError, match="must start with 'whsec_'"):
        SvixVerifier([Secret("not a secret!")])
    with pytest.raises(ValueError, match="tolerance_s must not be negative"):
        SvixVerifier([SECRET], tolerance_s=-1)


# --- signing secrets ------------------------------------------------------------------------------

PREFIX_MSG = (
    "signing secret must start with 'whsec_' (copy it from the Clerk dashboard: "
    "Webhooks → endpoint → Signing Secret)"
)
B64_MSG = "signing secret is not valid base64 after 'whsec_'"
CLERK_LIKE = "whsec_" + base64.b64encode(b"k" * 24).decode()

BAD_SECRETS = [
    ("", "signing secret is empty"),
    (" " + CLERK_LIKE, "signing secret has leading or trailing whitespace; remove it"),
    (CLERK_LIKE + "\n", "signing secret has leading or trailing whitespace; remove it"),
    (f'"{CLERK_LIKE}"', "signing secret is wrapped in quotes; remove the quotes"),
    (f"'{CLERK_LIKE}'", "signing secret is wrapped in quotes; remove the quotes"),
    (CLERK_LIKE[6:], PREFIX_MSG),
    ("WHSEC_" + CLERK_LIKE[6:], PREFIX_MSG),
    ("not a secret!", PREFIX_MSG),
    ("whsec_" + CLERK_LIKE[6:-3], B64_MSG),  # 29 characters: no padding makes that base64
    ("whsec_" + CLERK_LIKE[6:12] + " " + CLERK_LIKE[12:], B64_MSG),
    ("whsec_" + CLERK_LIKE[6:12] + "é" + CLERK_LIKE[12:], B64_MSG),
    ("whsec_" + CLERK_LIKE[6:12] + "-_" + CLERK_LIKE[14:], B64_MSG),
    ("whsec_", "signing secret is too short (0 bytes; expected at least 16, Clerk's are 24)"),
    (
        "whsec_" + base64.b64encode(b"k" * 15).decode(),
        "signing secret is too short (15 bytes; expected at least 16, Clerk's are 24)",
    ),
]


@pytest.mark.parametrize(("value", "expected"), BAD_SECRETS)
def test_parse_signing_secret_rejects(value: str, expected: str) -> None:
    """Each malformed secret is refused with a message that says what to fix and hides the value."""
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        parse_signing_secret(value)
    assert str(info.value) == expected
    key_text = value.strip().strip("'\"")
    assert len(key_text) < 8 or key_text not in str(info.value)
    # No chained decoder error shows up in a traceback either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.mark.parametrize(
    "value",
    [
        CLERK_LIKE,
        SVIX_VECTORS[0][0],
        SVIX_VECTORS[1][0],  # Svix's docs secret: 18 bytes
        "whsec_" + base64.b64encode(b"k" * 16).decode(),
        "whsec_" + base64.b64encode(b"k" * 64).decode(),
        "whsec_" + base64.b64encode(b"\xfb\xff" * 12).decode(),  # uses '+' and '/'
        "whsec_" + base64.b64encode(b"k" * 16).decode().rstrip("="),  # without its == padding
        "whsec_" + base64.b64encode(b"k" * 17).decode().rstrip("="),  # without its = padding
    ],
)
def test_parse_signing_secret_accepts(value: str) -> None:
    """Well-formed secrets of 16 bytes or more are accepted and wrapped in a Secret, with or
    without their base64 padding (as the Standard Webhooks reference library takes them)."""
    secret = parse_signing_secret(value)
    assert isinstance(secret, Secret)
    assert secret.reveal() == value


def test_secret_repr_is_redacted() -> None:
    """Neither a Secret nor a verifier shows the secret in repr, str or an f-string."""
    secret = parse_signing_secret(CLERK_LIKE)
    verifier = SvixVerifier([secret])
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr(verifier)):
        assert CLERK_LIKE not in text
        assert CLERK_LIKE[6:] not in text
    assert repr(secret) == "Secret('**********')"


# --- agreement with the svix library --------------------------------------------------------------


def _svix_accepts(secret: Secret, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret.reveal()).verify(body, headers)
    except Exception:  # svix raises WebhookVerificationError, or ValueError on malformed input
        return False
    return True


def _agreement_cases(now: int) -> list[tuple[str, bytes, dict[str, str]]]:
    good = signed(ts=now)
    return [
        ("valid", BODY, good),
        ("valid webhook-*", BODY, signed(ts=now, prefix="webhook")),
        ("svix wins", BODY, good | {"webhook-signature": "v1,AAAA"}),
        ("svix wins, bad", BODY, signed(ts=now, prefix="webhook") | {"svix-signature": "v1,AAAA"}),
        ("second entry", BODY, good | {"svix-signature": "v1,AAAA " + good["svix-signature"]}),
        ("v1a skipped", BODY, good | {"svix-signature": "v1a,xyz " + good["svix-signature"]}),
        ("tampered body", BODY + b" ", good),
        ("wrong secret", BODY, signed(ts=now, secret=OTHER_SECRET)),
        ("wrong id", BODY, good | {"svix-id": "msg_other"}),
        ("too old", BODY, signed(ts=now - 400)),
        ("too new", BODY, signed(ts=now + 400)),
        ("missing id", BODY, {k: v for k, v in good.items() if k != "svix-id"}),
        ("bad b64", BODY, good | {"svix-signature": "v1,!!!"}),
        ("no comma", BODY, good | {"svix-signature": "garbage"}),
        ("non-int ts", BODY, good | {"svix-timestamp": "soon"}),
    ]


def test_agrees_with_svix_library() -> None:
    """For fresh timestamps, accept/reject matches svix's Webhook.verify on each case."""
    now = int(time.time())
    ours = SvixVerifier([SECRET])
    for name, body, headers in _agreement_cases(now):
        try:
            ours.verify(body, headers)
            accepted = True
        except VerificationError:
            accepted = False
        assert accepted == _svix_accepts(SECRET, body, headers), name


def test_svix_library_signatures_are_accepted() -> None:
    """Webhook.sign output (aware UTC datetime) verifies with our verifier and equals sign()."""
    now = int(time.time())
    svix_sig = Webhook(SECRET.reveal()).sign(
        MSG_ID, datetime.fromtimestamp(now, tz=UTC), BODY.decode()
    )
    assert svix_sig == sign(SECRET, MSG_ID, now, BODY)
    headers = {"svix-id": MSG_ID, "svix-timestamp": str(now), "svix-signature": svix_sig}
    assert SvixVerifier([SECRET]).verify(BODY, headers).timestamp == now


# --- hostile input property -----------------------------------------------------------------------

WEIRD = st.sampled_from([None, b"bytes", 12, 1.5, "\ud800", "\x00", "é", " ", "v1,", "\r\n"])
REAL_PREFIXES = ["svix-", "webhook-", "SVIX-", "Webhook-"]


def _mac(msg_id: object, ts: int, body: bytes) -> bytes:
    content = f"{msg_id}.{ts}.".encode("utf-8", "surrogatepass") + body
    return hmac.new(KEY, content, hashlib.sha256).digest()


def mostly(
    good: st.SearchStrategy[object], hostile: st.SearchStrategy[object]
) -> st.SearchStrategy[tuple[bool, object]]:
    """Two times in three a well-formed value (flagged True), else a hostile one."""
    return st.one_of(
        good.map(lambda v: (True, v)),
        good.map(lambda v: (True, v)),
        hostile.map(lambda v: (False, v)),
    )


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, dict[object, object], bool]:
    """A body and a header dict, plus whether the request is genuinely signed and well-formed."""
    body = draw(st.binary(max_size=64))
    id_ok, msg_id = draw(
        mostly(st.sampled_from([MSG_ID, "m" * 256]), st.one_of(st.text(max_size=300), WEIRD))
    )
    ts_int = draw(st.one_of(st.integers(NOW - 300, NOW + 300), st.integers(NOW - 400, NOW + 400)))
    ts_ok, ts = draw(mostly(st.just(str(ts_int)), st.one_of(st.text(max_size=20), WEIRD)))
    genuine = "v1," + base64.b64encode(_mac(msg_id, ts_int, body)).decode()
    entry = st.one_of(
        st.text(max_size=50),
        st.sampled_from(["v1,!!!", "v1", "v1a,abc", "", "v1,", ","]),
        st.binary(max_size=40).map(lambda b: "v1," + base64.b64encode(b).decode()),
    )
    entries = draw(st.lists(entry, max_size=6))
    if draw(st.sampled_from([True, True, False])):
        entries.insert(draw(st.integers(0, len(entries))), genuine)
    sig_ok, sig = draw(mostly(st.just(" ".join(entries)), st.one_of(st.text(max_size=100), WEIRD)))
    headers: dict[object, object] = draw(
        st.dictionaries(st.one_of(st.text(max_size=20), WEIRD), st.text(max_size=20), max_size=3)
    )
    clean = id_ok and ts_ok and sig_ok and genuine in entries and abs(ts_int - NOW) <= 300
    clean = clean and not any(isinstance(k, str) and "svix-" in k.lower() for k in headers)
    clean = clean and not any(isinstance(k, str) and "webhook-" in k.lower() for k in headers)
    for part, value in (("id", msg_id), ("timestamp", ts), ("signature", sig)):
        if draw(st.sampled_from([True] * 19 + [False])):
            headers[draw(st.sampled_from(REAL_PREFIXES)) + part] = value
        else:  # left out, or under a name that is not ours
            clean = False
            if draw(st.booleans()):
                headers["x-svix-" + part] = value
    return body, headers, clean


def _resolve(headers: Mapping[object, object], part: str) -> object:
    lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    return lowered.get(f"svix-{part}", lowered.get(f"webhook-{part}"))


@settings(max_examples=200, deadline=None)
@given(hostile_requests())
def test_hostile_input_raises_only_verification_error(
    case: tuple[bytes, dict[object, object], bool],
) -> None:
    """Any headers and body either verify genuinely or raise VerificationError, nothing else."""
    body, headers, clean = case
    refused: str | None = None
    try:
        message = frozen().verify(body, headers)  # type: ignore[arg-type]
    except VerificationError as exc:
        refused = str(exc)
    event(f"refused: {refused}" if refused else "verified")
    if refused is not None:
        assert not clean, f"a genuinely signed request was refused: {refused}"
        assert SECRET.reveal()[6:] not in refused
        return
    assert message.message_id == _resolve(headers, "id")
    assert str(message.timestamp) == _resolve(headers, "timestamp")
    assert abs(message.timestamp - NOW) <= 300
    expected = _mac(message.message_id, message.timestamp, body)
    entries = str(_resolve(headers, "signature")).split(" ")
    decoded = []
    for entry in entries:
        version, _, encoded = entry.partition(",")
        try:
            decoded.append((version, base64.b64decode(encoded, validate=True)))
        except ValueError:
            continue
    assert ("v1", expected) in decoded
