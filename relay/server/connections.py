"""The HTTP connections a relay serves: bounded in number, never idle for long, and closed so that
the client reads its answer. uvicorn's httptools protocol (its C parser: 1.4-1.7x the requests a
core serves with h11, bench/RESULTS.md), with a ``ConnectionGuard`` shared by all.

- **At most ``max_connections`` open.** A connection past the limit closes the connection that
  has been idle longest (no request in progress: a crowd of idle sockets cannot keep anyone
  out); when none is idle it is answered ``503`` with ``Retry-After`` at once, and closed.
- **Idle connections close.** A connection must complete a request's headers within
  ``idle_timeout_s`` of opening or of its previous answer, however slowly it trickles bytes
  (uvicorn alone never closes a connection that sends nothing, and restarts its keep-alive timer
  on every byte). A body's own deadline is ingest's (``RELAY_BODY_TIMEOUT_S``).
- **Lingering close.** A connection closed while its client may still be sending (an answer given
  before the body was read: 413, 408, 503) is not closed outright: closing a socket with unread
  data makes the kernel reset it, and a client still writing its body (urllib, curl) then sees
  "connection reset" instead of the answer. As nginx's lingering close, relay sends its answer,
  shuts its side down, and reads and discards what still comes, for at most ``LINGER_S`` and
  ``LINGER_BYTES``, then closes. At most one lingering connection per eight allowed is kept;
  past that a connection is closed at once.

Also here, for the process: ``raise_open_files_limit`` (the soft RLIMIT_NOFILE up to the hard
one, at start) and ``AcceptFailures``, the event loop's exception handler that logs a failing
``accept()`` (out of file descriptors) once per interval with a count, instead of asyncio's
traceback on every try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("relay.server.connections")

LINGER_S = 5.0  # a lingering close reads what the client still sends for at most this long
LINGER_BYTES = 64 * 1024 * 1024  # and at most this much
FILES_RESERVED = 256  # descriptors kept for the store, logs and the sinks' outbound connections
ACCEPT_LOG_EVERY_S = 60.0
_BUSY_BODY = b'{"status":"busy","reason":"too many connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY


class ConnectionGuard:
    """What every connection of one server shares: the limits and who is open, and idle."""

    def __init__(self, max_connections: int, idle_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.max_lingering = max(1, max_connections // 8)
        self.open = 0  # connections holding a slot (not closing)
        self.lingering = 0
        self.idle: dict[RelayHttpToolsProtocol, None] = {}  # idle connections, longest idle first
        self.refused = 0  # answered 503: too many connections
        self.evicted = 0  # idle connections closed to make room
        self.idle_closed = 0  # idle past idle_timeout_s

    def make_room(self) -> bool:
        """Close the connection idle longest, if one is; whether one was."""
        for oldest in self.idle:
            self.evicted += 1
            oldest.close_idle()
            return True
        return False

    def protocol(self) -> type[RelayHttpToolsProtocol]:
        """The protocol class for uvicorn's ``http=``, its connections sharing this guard."""
        return type("GuardedHttpToolsProtocol", (RelayHttpToolsProtocol,), {"guard": self})


class RelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a ``ConnectionGuard`` (see the module docstring)."""

    guard: ClassVar[ConnectionGuard]
    _bad_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._counted = True
        self._draining = False
        self._drained = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        super().connection_made(_Lingering(transport, self))
        guard = self.guard
        guard.open += 1
        if guard.open > guard.max_connections and not guard.make_room():
            guard.refused += 1
            self._raw.write(_BUSY)
            self._draining = True  # whatever it sends is never parsed
            self.transport.close()
            return
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._stop_lingering()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drained += len(data)
            if self._drained > LINGER_BYTES:
                self._stop_lingering()
            return
        super().data_received(data)
        self._track()

    def eof_received(self) -> None:
        if self._draining:
            self._stop_lingering()

    def _unread(self) -> bool:
        """Whether the client may still be sending: a request whose body is not read whole
        (answered before it: 413, 408, 503), or one httptools could not parse (answered 400)."""
        cycle = self.cycle
        return self._bad_request or (cycle is not None and cycle.more_body)

    def send_400_response(self, msg: str) -> None:
        self._bad_request = True
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def shutdown(self) -> None:
        """The server is shutting down: a lingering close ends now; the rest as uvicorn does."""
        if self._draining:
            self._stop_lingering()
            return
        super().shutdown()

    # --- idle connections ----------------------------------------------------------------------

    def _track(self) -> None:
        """Keep the guard's idle set and this connection's idle deadline up to date: idle from
        its opening or an answer until a request's headers are complete."""
        guard = self.guard
        if not self._counted or self._draining:
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy:
            guard.idle.pop(self, None)
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
        elif self not in guard.idle:
            guard.idle[self] = None
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._idle_timer = self.loop.call_later(guard.idle_timeout_s, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self in self.guard.idle:
            self.guard.idle_closed += 1
            self.close_idle()

    def close_idle(self) -> None:
        """Close this idle connection (no request in progress), as uvicorn's keep-alive timeout."""
        self._release()
        if not self.transport.is_closing():
            self.transport.close()

    def _release(self) -> None:
        """Give back this connection's slot (once): it is closing."""
        if self._counted:
            self._counted = False
            self.guard.open -= 1
            self.guard.idle.pop(self, None)
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

    # --- closing -------------------------------------------------------------------------------

    def closing(self) -> None:
        """The connection is to close (uvicorn, or the app's answer, said so): at once when the
        client has sent all it meant to, else after a lingering read of the rest."""
        self._release()
        guard = self.guard
        unread = self._draining or self._unread()
        if (
            not unread
            or guard.lingering >= guard.max_lingering
            or self._raw.is_closing()  # lost already: uvicorn closes after connection_lost
            or not self._raw.can_write_eof()
        ):
            self._raw.close()
            return
        guard.lingering += 1
        self._draining = True
        self._linger_timer = self.loop.call_later(LINGER_S, self._stop_lingering)
        self._raw.resume_reading()
        self._raw.write_eof()  # after what is buffered: the client gets the whole answer

    def _stop_lingering(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self.guard.lingering -= 1
        self._raw.close()


class _Lingering(asyncio.Transport):
    """The transport as uvicorn sees it: ``close()`` asks the protocol how to close."""

    def __init__(self, transport: asyncio.Transport, protocol: RelayHttpToolsProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._protocol.closing()

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def abort(self) -> None:
        self._closing = True
        self._protocol._release()
        self._transport.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._transport.write(data)

    def pause_reading(self) -> None:
        if not self._closing:  # a lingering close keeps reading
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


# --- the process ----------------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a process may); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connections_allowed(wanted: int, open_files: int) -> int:
    """How many connections the descriptors allow, keeping ``FILES_RESERVED`` for the rest."""
    return max(16, min(wanted, open_files - FILES_RESERVED))


class AcceptFailures:
    """The event loop's exception handler: a failing ``accept()`` (out of descriptors, memory or
    buffers) is logged once per ``every_s`` with how often it failed, without a traceback;
    asyncio itself already retries the listener a second later. Everything else goes to the
    loop's default handler."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(
        self, every_s: float = ACCEPT_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self.failures = 0  # since the last line
        self.total = 0
        self._logged_at = float("-inf")

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self.failures += 1
        self.total += 1
        now = self.clock()
        if now - self._logged_at < self.every_s:
            return
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or str(exc)
        fields = {"error": reason, "failures": self.failures, "every_s": self.every_s}
        log.error("cannot accept connections: retrying each second", extra={"fields": fields})
        self._logged_at, self.failures = now, 0
