"""The outbound HTTP client every sink shares, over a few connection pools instead of one.

httpcore's connection pool (httpx's transport) does work that grows with the square of its
connections on every request it starts or finishes: it walks all its connections, polls the
socket of each idle one, and counts the idle ones again for each idle one it meets. At the 32
concurrent sends a sink allows by default that bookkeeping is most of the client's CPU: in
`bench/`, 1.8 ms of CPU per POST to a local sink with one pool, 0.7 ms with four (8 on average in
use in each), 0.65 ms with eight. So the client has four pools, each with a quarter of the limits
(rounded up), and each request goes to the pool with the fewest requests in progress (until its
response is closed): connections are still reused, and no pool runs out of connections while
another has room.

When a proxy is set in the environment (``HTTPS_PROXY`` and friends, which httpx honours only
for a client that builds its own transport), the client keeps httpx's own single pool, so proxy
settings keep working exactly as before.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import AsyncIterator, Callable

import httpx

SHARDS = 4
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx transports sharing ``limits``; each request goes to the least busy."""

    def __init__(self, shards: int = SHARDS, limits: httpx.Limits = LIMITS) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        share = httpx.Limits(
            max_connections=_share(limits.max_connections, shards),
            max_keepalive_connections=_share(limits.max_keepalive_connections, shards),
            keepalive_expiry=limits.keepalive_expiry,
        )
        ssl_context = httpx.create_ssl_context()  # one trust store for all of them
        self.shards = [
            httpx.AsyncHTTPTransport(verify=ssl_context, limits=share) for _ in range(shards)
        ]
        self.in_progress = [0] * shards  # requests sent and not yet closed, per shard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self.shards)), key=self.in_progress.__getitem__)
        self.in_progress[i] += 1
        try:
            response = await self.shards[i].handle_async_request(request)
        except BaseException:
            self.in_progress[i] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, lambda: self._done(i))
        return response

    def _done(self, i: int) -> None:
        self.in_progress[i] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


class _Released(httpx.AsyncByteStream):
    """A response body that calls ``release`` once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _share(limit: int | None, shards: int) -> int | None:
    return None if limit is None else max(1, math.ceil(limit / shards))


def make_http_client() -> httpx.AsyncClient:
    """The one outbound client every sink shares: no redirects, bounded pools."""
    proxied = bool(urllib.request.getproxies())  # httpx applies these only to its own transport
    return httpx.AsyncClient(
        transport=None if proxied else ShardedTransport(),
        limits=LIMITS,  # for httpx's own transport; ShardedTransport shares out the same
        follow_redirects=False,
        timeout=httpx.Timeout(10.0),
        headers={"User-Agent": "relay/0.1"},
    )
