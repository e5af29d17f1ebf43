"""The outbound HTTP client every sink shares, over a few connection pools instead of one.

httpcore's connection pool (httpx's transport) does work that grows with the square of its
connections on every request it starts or finishes: it walks all its connections, polls the
socket of each idle one, and counts the idle ones again for each idle one it meets. At the 32
concurrent sends a sink allows by default that bookkeeping is most of the client's CPU: in
`bench/`, 1.8 ms of CPU per POST to a local sink with one pool, 0.7 ms with four (8 on average in
use in each), 0.65 ms with eight. So requests go round-robin to four pools, each with a quarter of
the limits. Connections are still reused (each pool keeps its own keep-alive connections), and
the total limits stay those of one client.

When a proxy is set in the environment (``HTTPS_PROXY`` and friends, which httpx honours only
for a client that builds its own transport), the client keeps httpx's own single pool, so proxy
settings keep working exactly as before.
"""

from __future__ import annotations

import math
import urllib.request

import httpx

SHARDS = 4
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx transports that take requests in turn; ``limits`` are shared out among them."""

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
        self._next = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self.shards[self._next]
        self._next = (self._next + 1) % len(self.shards)
        return await shard.handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


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
