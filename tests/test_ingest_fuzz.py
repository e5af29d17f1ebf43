"""Property tests of ingest: 2xx only for a correctly signed, fresh JSON event; never a 5xx.

The endpoint runs in-process over httpx's ASGI transport with a real SQLite store; the clock is
frozen so timestamps can sit exactly at the ±300 s edges.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import Config, load_config
from relay.ingest import IngestEndpoint
from relay.secret import Secret
from relay.sources.signing import sign
from relay.store.sqlite import SQLiteStore
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET

NOW = 1_800_000_000
SECRET = Secret(TEST_SECRET)
URL = "http://relay.test/webhooks/clerk"


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.runner = asyncio.Runner()
        self.db = tmp / "relay.db"
        self.store = SQLiteStore(self.db)
        self.config: Config = load_config(ROOT / "rules.yaml", ROOT / "templates", env=TEST_ENV)
        endpoint = IngestEndpoint(lambda: self.config, self.store, lambda: float(NOW))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint))
        self.runner.run(self.store.open())

    def post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        return self.runner.run(self.client.post(URL, content=body, headers=headers))

    def stored_ids(self) -> set[str]:
        with sqlite3.connect(self.db) as conn:
            return {row[0] for row in conn.execute("SELECT message_id FROM events")}

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.store.close())
        self.runner.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("ingest"))
    yield h
    h.close()


def signed(msg_id: str, ts: int, body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"svix-id", msg_id.encode()),
        (b"svix-timestamp", str(ts).encode()),
        (b"svix-signature", sign(SECRET, msg_id, ts, body).encode()),
    ]


printable_id = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
header_value = st.one_of(
    st.binary(max_size=64).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64).map(
        str.encode
    ),
    st.integers().map(lambda i: str(i).encode()),
    st.just(b"v1," + b"A" * 9000),
    st.lists(
        st.sampled_from([b"v1,AAAA", b"v1a,xyz", b"v1,", b",", b"v1,!!!", b" "]), max_size=60
    ).map(b" ".join),
)
header_name = st.sampled_from(
    [
        b"svix-id",
        b"svix-timestamp",
        b"svix-signature",
        b"webhook-id",
        b"webhook-timestamp",
        b"webhook-signature",
        b"content-type",
    ]
)
any_body = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 100_000 + b"]" * 100_000),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(header_name, header_value), max_size=8), body=any_body)
def test_unsigned_garbage_is_4xx_and_never_stored(
    harness: Harness, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Arbitrary headers and bodies without a valid signature get a 4xx and store nothing."""
    before = harness.stored_ids()
    response = harness.post(body, headers)
    assert 400 <= response.status_code < 500, response.text
    assert harness.stored_ids() == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg_id=printable_id,
    skew=st.integers(-400, 400),
    body=any_body,
    junk=st.lists(st.sampled_from(["v1,AAAA", "v1a,xyz", "v2,abc"]), max_size=3),
)
def test_signed_requests_pass_only_when_fresh_and_an_event(
    harness: Harness, msg_id: str, skew: int, body: bytes, junk: list[str]
) -> None:
    """A valid signature passes only within ±300 s, and only for a JSON object with a type."""
    headers = signed(msg_id, NOW + skew, body)
    name, value = headers[2]
    headers[2] = (name, b" ".join([*(j.encode() for j in junk), value]))
    response = harness.post(body, headers)
    assert response.status_code < 500, response.text
    try:
        event: Any = json.loads(body)
    except (ValueError, RecursionError):
        event = None
    is_event = isinstance(event, dict) and isinstance(event.get("type"), str) and event["type"]
    expected_ok = abs(skew) <= 300 and bool(is_event)
    assert response.is_success is expected_ok, (skew, response.text)
    if not expected_ok:
        assert msg_id not in harness.stored_ids() or response.json()["status"] == "duplicate"
    else:
        assert msg_id in harness.stored_ids()


@pytest.mark.parametrize(("skew", "ok"), [(-301, False), (-300, True), (300, True), (301, False)])
def test_timestamp_edges(harness: Harness, skew: int, ok: bool) -> None:
    """Exactly ±300 s is accepted; one second beyond is a 400."""
    body = json.dumps({"type": "user.created", "data": {}}).encode()
    response = harness.post(body, signed(f"msg_edge_{skew}", NOW + skew, body))
    assert response.status_code == (200 if ok else 400)


def test_duplicated_headers_use_the_last_value(harness: Harness) -> None:
    """With a duplicated svix-id, the last value is the one verified (as in the svix library)."""
    body = json.dumps({"type": "user.created", "data": {}}).encode()
    headers = [(b"svix-id", b"msg_first"), *signed("msg_dup_last", NOW, body)]
    response = harness.post(body, headers)
    assert response.status_code == 200
    assert "msg_dup_last" in harness.stored_ids()
    assert "msg_first" not in harness.stored_ids()
