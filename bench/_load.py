"""The ingest load generator: C keep-alive connections, one signed request in flight on each.

The seam ``bench/ingest.py`` uses, and all of it: ``make_requests`` signs the events before the
timed phase, ``run_load`` sends a warm-up and then the timed requests (starting and stopping a
meter around the timed phase only) and returns a ``Tally`` of the timed phase. A load generator
of another kind (``wrk`` with a Lua script, say) replaces this module behind the same three
names. Two clients: raw asyncio streams (the default, about 0.08 ms of CPU per request) and
``httpx.AsyncClient`` (much dearer: it measures itself before the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from _fixtures import svix_headers, user_created_bodies
from _procs import HOST

if TYPE_CHECKING:
    import httpx

PATH = "/webhooks/clerk"


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes
    raw: bytes  # the whole HTTP/1.1 request, for the raw client


def make_requests(n: int, secret: str, port: int, tag: str) -> list[Request]:
    """``n`` distinct, correctly signed user.created requests (signed now: valid for 300 s)."""
    timestamp = int(time.time())
    out = []
    for i, body in enumerate(user_created_bodies(n, tag)):
        msg_id = f"msg_{tag}_{i:08d}_{timestamp}"
        headers = svix_headers(secret, msg_id, timestamp, body)
        head = f"POST {PATH} HTTP/1.1\r\nhost: {HOST}:{port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out.append(Request(headers, body, head.encode() + body))
    return out


@dataclass
class Tally:
    """What the timed phase saw: each answered request's latency and start, and the errors."""

    latencies_ms: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # perf_counter at each request's start
    errors: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def error(self, text: str) -> None:
        self.errors += 1
        self.kinds[text[:120]] += 1


class Meter(Protocol):
    """Started just before the timed phase's first request, stopped after its last answer."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


async def run_load(
    ports: Sequence[int],
    warmup: Sequence[Request],
    timed: Sequence[Request],
    concurrency: int,
    client: str,
    meter: Meter,
    during: Callable[[], None] = lambda: None,
) -> Tally:
    """Run the warm-up, then ``during()``, then the timed phase (metered); returns the timed
    phase's tally. Connection i goes to ``ports[i % len(ports)]`` (round-robin over the
    replicas). ``client`` is ``raw`` or ``httpx``."""
    if client == "raw":
        conns = [RawConnection(ports[i % len(ports)]) for i in range(concurrency)]
        senders = [_raw_sender(conn) for conn in conns]
        await _drive(senders, warmup)
        during()
        meter.start()
        tally = await _drive(senders, timed)
        meter.stop()
        for conn in conns:
            await conn.close()
        return tally
    import httpx

    urls = [f"http://{HOST}:{port}{PATH}" for port in ports]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as hc:
        senders = [_httpx_sender(hc, urls[i % len(urls)]) for i in range(concurrency)]
        await _drive(senders, warmup)
        during()
        meter.start()
        tally = await _drive(senders, timed)
        meter.stop()
    return tally


class RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams; a request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the raw client")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


# A sender posts one request and says whether it was answered and what went wrong ("" if
# nothing): an answer other than 200 is answered, with an error; a broken connection is not.
Sender = Callable[[Request], Awaitable[tuple[bool, str]]]


def _raw_sender(conn: RawConnection) -> Sender:
    async def send(req: Request) -> tuple[bool, str]:
        try:
            status, body = await conn.request(req.raw)
        except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
            await conn.close()
            return False, f"{type(exc).__name__}: {exc}"
        return True, "" if status == 200 else f"{status} {body[:100]!r}"

    return send


def _httpx_sender(client: httpx.AsyncClient, url: str) -> Sender:
    import httpx

    async def send(req: Request) -> tuple[bool, str]:
        try:
            response = await client.post(url, content=req.body, headers=req.headers)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return True, f"{response.status_code} {response.text[:100]}"
        return True, ""

    return send


async def _drive(senders: Sequence[Sender], requests: Sequence[Request]) -> Tally:
    """Every request through one of the senders, each with one request in flight at a time."""
    tally = Tally()
    it = iter(requests)
    clock = time.perf_counter

    async def worker(send: Sender) -> None:
        for req in it:
            t0 = clock()
            answered, error = await send(req)
            if answered:
                tally.latencies_ms.append((clock() - t0) * 1000)
                tally.started.append(t0)
            if error:
                tally.error(error)

    await asyncio.gather(*(worker(send) for send in senders))
    return tally
