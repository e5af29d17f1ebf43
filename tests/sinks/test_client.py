"""The sinks' shared outbound client: several connection pools, each request to the least busy;
real HTTP to a server on loopback; httpx's own transport when a proxy is set in the environment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from relay.sinks.client import ShardedTransport, make_http_client

pytestmark = pytest.mark.anyio


@dataclass
class Upstream:
    """A tiny HTTP/1.1 server: keep-alive, ``200 ok`` after ``delay_s`` (``slow_s`` for paths
    under /slow); records each request's first line and the client port it came on, and how
    many connections were open at most."""

    delay_s: float = 0.0
    slow_s: float = 0.5
    port: int = 0
    requests: list[tuple[int, str]] = field(default_factory=list)
    open: int = 0
    most_open: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_port = writer.get_extra_info("peername")[1]
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                length = next(
                    (int(v) for k, _, v in (x.partition(":") for x in lines)
                     if k.lower() == "content-length"), 0)  # fmt: skip
                await reader.readexactly(length)
                self.requests.append((client_port, lines[0]))
                self.arrived.set()
                slow = lines[0].split(" ")[1].startswith("/slow")
                await asyncio.sleep(self.slow_s if slow else self.delay_s)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def serve(upstream: Upstream) -> AsyncIterator[Upstream]:
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async for running in serve(Upstream()):
        yield running


@pytest.fixture
async def slow_upstream() -> AsyncIterator[Upstream]:
    async for running in serve(Upstream(delay_s=0.05)):
        yield running


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "NO_PROXY", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


async def test_requests_one_after_another_reuse_one_connection(
    upstream: Upstream, no_proxy: None
) -> None:
    """Keep-alive works through the pools: eight requests one after another go to the same
    (least busy) pool and share its one connection; nothing is left counted as in progress."""
    async with make_http_client() as client:
        transport = client._transport
        assert isinstance(transport, ShardedTransport)
        for n in range(8):
            response = await client.post(f"http://127.0.0.1:{upstream.port}/{n}", content=b"{}")
            assert (response.status_code, response.text) == (200, "ok")
        assert transport.in_progress == [0, 0, 0, 0]
    assert [line for _, line in upstream.requests] == [f"POST /{n} HTTP/1.1" for n in range(8)]
    assert len({port for port, _ in upstream.requests}) == 1


async def test_a_busy_pool_is_passed_over(upstream: Upstream) -> None:
    """Two pools of one connection each: while a slow request holds one, the others go to the
    other pool and do not queue behind it."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    transport = ShardedTransport(2, limits)
    done: list[str] = []
    async with httpx.AsyncClient(transport=transport) as client:

        async def get(path: str) -> None:
            response = await client.get(f"http://127.0.0.1:{upstream.port}{path}")
            assert response.status_code == 200
            done.append(path)

        slow = asyncio.ensure_future(get("/slow"))
        await asyncio.wait_for(upstream.arrived.wait(), 5)  # the slow request is being served
        assert transport.in_progress == [1, 0]
        for n in range(4):
            await get(f"/{n}")
        await slow
    assert done == ["/0", "/1", "/2", "/3", "/slow"]
    assert transport.in_progress == [0, 0]


async def test_the_limits_are_shared_out_among_the_pools(slow_upstream: Upstream) -> None:
    """The connection limit is for all the pools together: four pools and a limit of 4 keep at
    most 4 connections open, however many requests wait."""
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with httpx.AsyncClient(transport=ShardedTransport(4, limits)) as client:
        url = f"http://127.0.0.1:{slow_upstream.port}/"
        responses = await asyncio.gather(*(client.get(url) for _ in range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert slow_upstream.most_open == 4


async def test_a_refused_connection_is_httpx_connect_error(no_proxy: None) -> None:
    """Errors keep httpx's types, which the sinks sort into retryable and permanent, and a
    failed request is not left counted as in progress."""
    with socket_port() as port:  # bound, never listening: connections are refused
        async with make_http_client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
            assert isinstance(client._transport, ShardedTransport)
            assert client._transport.in_progress == [0, 0, 0, 0]


async def test_a_proxy_in_the_environment_is_used(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    """With HTTP_PROXY set, the client is httpx's own, which sends through the proxy (here the
    upstream plays the proxy: it sees the absolute URL of the origin)."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{upstream.port}")
    async with make_http_client() as client:
        assert not isinstance(client._transport, ShardedTransport)
        response = await client.get("http://origin.test/hook")
    assert response.status_code == 200
    assert [line for _, line in upstream.requests] == ["GET http://origin.test/hook HTTP/1.1"]


def test_shards_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(0)


class socket_port:
    """A loopback port that is bound but not listening, for the time of a ``with``."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
