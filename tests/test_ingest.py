"""The ingest endpoint at the ASGI level: how the body arrives, what a POST elsewhere gets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import Config, load_config
from relay.ingest import IngestEndpoint
from relay.secret import Secret
from relay.server.app import create_app
from relay.settings import Settings
from relay.sources.signing import sign
from relay.store.base import NewDelivery, NewEvent
from relay.store.sqlite import SQLiteStore
from relay.store.steps import IngestResult, Step
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET

pytestmark = pytest.mark.anyio
BODY = (ROOT / "samples" / "user.created.json").read_bytes()


def signed_headers(msg_id: str, body: bytes = BODY) -> list[tuple[bytes, bytes]]:
    now = int(time.time())
    return [
        (b"content-type", b"application/json"),
        (b"svix-id", msg_id.encode()),
        (b"svix-timestamp", str(now).encode()),
        (b"svix-signature", sign(Secret(TEST_SECRET), msg_id, now, body).encode()),
    ]


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }


def config() -> Config:
    return load_config(ROOT / "rules.yaml", ROOT / "templates", env=TEST_ENV)


async def call(
    endpoint: IngestEndpoint,
    path: str,
    headers: list[tuple[bytes, bytes]],
    messages: Iterable[dict[str, Any]],
) -> tuple[int, dict[str, Any]]:
    """Run one request; ``messages`` are what receive() returns, in order."""
    queue = list(messages)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await endpoint(scope(path, headers), receive, send)
    start, body = sent
    assert (b"content-type", b"application/json") in start["headers"]
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    return start["status"], json.loads(body["body"])


def chunks(body: bytes, size: int) -> Iterator[dict[str, Any]]:
    for i in range(0, len(body), size):
        more = i + size < len(body)
        yield {"type": "http.request", "body": body[i : i + size], "more_body": more}


def stored(store: SQLiteStore) -> list[str]:
    with sqlite3.connect(store.path) as conn:
        return [row[0] for row in conn.execute("SELECT message_id FROM events")]


async def test_a_body_sent_in_pieces_is_verified_whole(store: SQLiteStore) -> None:
    endpoint = IngestEndpoint(config, store, time.time)
    headers = signed_headers("msg_pieces")
    status, answer = await call(endpoint, "/webhooks/clerk", headers, chunks(BODY, 100))
    assert (status, answer["status"], answer["deliveries"]) == (200, "accepted", 2)
    assert stored(store) == ["msg_pieces"]


async def test_a_body_over_the_limit_without_content_length_is_413(store: SQLiteStore) -> None:
    """The limit holds while reading (no content-length to trust): 2 MiB in 64 KiB pieces."""
    endpoint = IngestEndpoint(config, store, time.time)
    big = b" " * (2 << 20)
    status, answer = await call(
        endpoint, "/webhooks/clerk", signed_headers("m", big), chunks(big, 1 << 16)
    )
    assert (status, answer["status"]) == (413, "rejected")
    assert "larger than 1048576 bytes" in answer["reason"]
    assert stored(store) == []


async def test_a_client_that_disconnects_mid_body_is_not_stored(store: SQLiteStore) -> None:
    endpoint = IngestEndpoint(config, store, time.time)
    first_half = next(chunks(BODY, len(BODY) // 2))
    status, answer = await call(
        endpoint, "/webhooks/clerk", signed_headers("msg_gone"), [first_half]
    )
    assert (status, answer) == (400, {"status": "rejected", "reason": "client disconnected"})
    assert stored(store) == []


async def test_a_body_that_stops_arriving_is_408_and_not_stored(store: SQLiteStore) -> None:
    """A sender that sends half a body and stalls is answered 408 once the body deadline has
    passed, and nothing is stored."""
    endpoint = IngestEndpoint(config, store, time.time, body_timeout_s=0.05)
    first_half = next(chunks(BODY, len(BODY) // 2))
    pending = [first_half]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async with asyncio.timeout(5):  # without a deadline the endpoint would wait for ever
        await endpoint(scope("/webhooks/clerk", signed_headers("msg_stalled")), receive, send)
    start, body = sent
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"]) == {
        "status": "rejected",
        "reason": "body not received within 0.05 s",
    }
    assert stored(store) == []


async def test_only_the_overdue_body_reads_are_cut(store: SQLiteStore) -> None:
    """Reads in flight share one deadline timer: of two requests, the one whose body stalls is
    answered 408 at its deadline, and the one whose body arrives (later than the first stalled,
    but within its own deadline) is stored."""
    endpoint = IngestEndpoint(config, store, time.time, body_timeout_s=0.2)
    half = len(BODY) // 2
    rest_arrives = asyncio.Event()
    sent: dict[str, list[dict[str, Any]]] = {"stalled": [], "slow": []}

    def receiver(name: str) -> Any:
        pieces = [{"type": "http.request", "body": BODY[:half], "more_body": True}]

        async def receive() -> dict[str, Any]:
            if pieces:
                return pieces.pop()
            if name == "stalled":
                await asyncio.Event().wait()
            await rest_arrives.wait()
            return {"type": "http.request", "body": BODY[half:], "more_body": False}

        return receive

    def sender(name: str) -> Any:
        async def send(message: dict[str, Any]) -> None:
            sent[name].append(message)

        return send

    async def post(name: str) -> None:
        await endpoint(
            scope("/webhooks/clerk", signed_headers(f"msg_{name}")), receiver(name), sender(name)
        )

    async with asyncio.timeout(5):
        stalled = asyncio.create_task(post("stalled"))
        await asyncio.sleep(0.1)
        slow = asyncio.create_task(post("slow"))  # its deadline is 0.1 s after the first's
        await stalled
        assert sent["slow"] == []  # still reading when the first was cut
        rest_arrives.set()
        await slow
    assert [sent[name][0]["status"] for name in ("stalled", "slow")] == [408, 200]
    assert stored(store) == ["msg_slow"]


async def test_a_body_read_cancelled_from_outside_is_not_a_408(store: SQLiteStore) -> None:
    """A request cancelled while its body is read (the server shutting down) stays cancelled:
    no answer is made up for it."""
    endpoint = IngestEndpoint(config, store, time.time, body_timeout_s=60)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(
        endpoint(scope("/webhooks/clerk", signed_headers("msg_cut")), receive, send)
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent == []


async def test_a_post_to_a_path_of_no_source_is_404(store: SQLiteStore) -> None:
    endpoint = IngestEndpoint(config, store, time.time)
    status, answer = await call(
        endpoint, "/webhooks/nope", signed_headers("m"), chunks(BODY, 1 << 20)
    )
    assert (status, answer) == (404, {"status": "not_found"})


@asynccontextmanager
async def serving(settings: Settings, store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    """The app from create_app, started (lifespan) and called over ASGI."""
    app = create_app(settings, config(), store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield client


def header_dict(msg_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in signed_headers(msg_id)}


async def test_the_app_sends_posts_to_ingest_and_the_rest_to_its_routes(tmp_path: Path) -> None:
    """Through create_app: a signed POST is stored; POST /healthz is not a source (404 JSON);
    GET on a source's path is the wrong method (405); the health endpoints still answer."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'relay.db'}", worker=False)
    store = SQLiteStore(tmp_path / "relay.db")
    async with serving(settings, store) as client:
        accepted = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m1"))
        assert accepted.status_code == 200
        assert accepted.json()["status"] == "accepted"
        assert accepted.headers["content-type"] == "application/json"
        assert (await client.post("/healthz", content=b"{}")).json() == {"status": "not_found"}
        assert (await client.get("/webhooks/clerk")).status_code == 405
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert stored(store) == ["m1"]


async def test_without_ingest_a_post_is_not_handled(tmp_path: Path) -> None:
    """`relay worker` serves no source: a signed POST is refused by the routes, not stored."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'relay.db'}", ingest=False)
    store = SQLiteStore(tmp_path / "relay.db")
    async with serving(settings.with_(worker=False), store) as client:
        post = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m2"))
        assert post.status_code == 404
        assert (await client.post("/healthz")).status_code == 405
        assert stored(store) == []


async def test_concurrent_posts_are_each_answered_with_their_own_event(store: SQLiteStore) -> None:
    endpoint = IngestEndpoint(config, store, time.time)
    results = await asyncio.gather(
        *(
            call(endpoint, "/webhooks/clerk", signed_headers(f"msg_{n}"), chunks(BODY, 1 << 20))
            for n in range(40)
        )
    )
    ids = [answer["event_id"] for _, answer in results]
    assert len(set(ids)) == 40
    assert sorted(stored(store)) == sorted(f"msg_{n}" for n in range(40))


class BrokenStore(SQLiteStore):
    """A store whose ingest fails in a way no store should (a bug, not StoreError). (``ingest``
    goes through ``admit``, as an ingest with workflow steps does.)"""

    async def admit(
        self, event: NewEvent, deliveries: Sequence[NewDelivery], steps: Sequence[Step] = ()
    ) -> IngestResult:
        raise RuntimeError("bug")


async def test_an_unexpected_error_is_a_logged_json_500_and_the_app_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'relay.db'}", worker=False)
    store = BrokenStore(tmp_path / "relay.db")
    async with serving(settings, store) as client:
        failed = await client.post("/webhooks/clerk", content=BODY, headers=header_dict("m3"))
        assert (failed.status_code, failed.json()) == (500, {"status": "error", "retry": True})
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    errors = [r for r in caplog.records if r.name == "relay.ingest" and r.levelname == "ERROR"]
    assert [(r.getMessage(), r.exc_info and str(r.exc_info[1])) for r in errors] == [
        ("ingest failed", "bug")
    ]
