"""relay.server.connections' process-level pieces: the accept-failure log and the connection limit
from the open-file limit (the connections themselves: tests/e2e/test_connections.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relay.server.connections import (
    FILES_RESERVED,
    AcceptFailures,
    ConnectionGuard,
    RelayHttpToolsProtocol,
    connections_allowed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def emfile() -> dict[str, Any]:
    return {
        "message": AcceptFailures.MESSAGE,
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


def test_a_failing_accept_is_logged_once_per_interval_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """accept() failing every second for two minutes: three lines (at the first failure, and
    one per minute after) with how many failures each covers, no traceback; anything else the
    loop reports goes to its default handler."""
    clock = Clock()
    handler = AcceptFailures(every_s=60, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(121):
                handler(loop, emfile())
                clock.now += 1
            handler(loop, {"message": "something else"})
    finally:
        loop.close()
    ours = [r for r in caplog.records if r.name == "relay.server.connections"]
    assert [r.fields["failures"] for r in ours] == [1, 60, 60]  # type: ignore[attr-defined]
    assert {r.fields["error"] for r in ours} == {"Too many open files"}  # type: ignore[attr-defined]
    assert all(r.exc_info is None for r in ours)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["something else"]


@pytest.mark.parametrize(
    ("wanted", "open_files", "allowed"),
    [
        (1000, 1_048_576, 1000),
        (1000, 1024, 1024 - FILES_RESERVED),
        (1000, 100, 16),
    ],
)
def test_connections_allowed_leave_descriptors_for_the_rest(
    wanted: int, open_files: int, allowed: int
) -> None:
    """The connection limit stays under the open-file limit, keeping FILES_RESERVED for the
    store, logs and the sinks' connections (16 at the least)."""
    assert connections_allowed(wanted, open_files) == allowed


def test_relay_listens_on_sockets_that_say_they_are_tcp() -> None:
    """relay binds its listeners itself; they must be IPPROTO_TCP sockets, because asyncio sets
    TCP_NODELAY only on those: without it an answer written in two parts (head, body) waits
    for the client's delayed ACK, 40 ms per request."""
    from relay.cli.serve import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_the_guard_wraps_uvicorns_httptools_protocol() -> None:
    """guard.protocol() is uvicorn's httptools protocol under the guard (what relay serve uses),
    its connections sharing the one guard."""
    guard = ConnectionGuard(max_connections=8, idle_timeout_s=5.0)
    protocol = guard.protocol()
    assert issubclass(protocol, HttpToolsProtocol)
    assert protocol.guard is guard


def test_httptools_connections_linger_while_a_body_may_still_come() -> None:
    """With httptools, the client may still be sending while its request's body is incomplete
    or after an unparsable request (answered 400); not once the body is whole or between
    requests."""
    protocol = RelayHttpToolsProtocol.__new__(RelayHttpToolsProtocol)
    protocol.cycle = cast(Any, None)
    assert not protocol._unread()
    protocol.cycle = cast(Any, SimpleNamespace(more_body=True))
    assert protocol._unread()
    protocol.cycle = cast(Any, SimpleNamespace(more_body=False))
    assert not protocol._unread()
    protocol._bad_request = True
    assert protocol._unread()
