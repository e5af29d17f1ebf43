"""The fake upstream of the end-to-end tests (``tests.e2e.harness`` re-exports it).

``FakeUpstream``: a real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer`` in a thread)
that impersonates Resend (``POST /emails``), a Slack incoming webhook (``POST /slack/...``) and the
HTTP sink's target (``POST /membership``). It records every complete request on arrival and answers
from a script per path (``upstream.script("/membership", [500, 200])``; ``(429, {"Retry-After":
"1"})`` adds headers), then from the path's ``always`` reply, then 200. A scripted reply can also
delay its answer (``Answer(delay_s=...)``), drop the connection before or in the middle of the
answer (``Drop``), or send any body with any content type. Requests in flight (arrived, not
answered yet) and requests cut short by their sender are counted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

EMAILS_PATH = "/emails"


@dataclass(frozen=True)
class Recorded:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    raw: bytes
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


def _answer_body(path: str, status: int) -> tuple[bytes, str]:
    """What the impersonated service answers: Resend JSON, Slack's plain text, or JSON."""
    ok = 200 <= status < 300
    if path.endswith(EMAILS_PATH):  # Resend at its base URL, or under a prefix (/resend/emails)
        if ok:
            body: dict[str, Any] = {"id": f"e2e-{uuid.uuid4()}"}
        else:
            names = {429: "rate_limit_exceeded", 422: "validation_error"}
            body = {
                "statusCode": status,
                "name": names.get(status, "application_error"),
                "message": "scripted failure",
            }
        return json.dumps(body).encode(), "application/json"
    if path.startswith("/slack/"):
        return (b"ok" if ok else b"scripted_failure"), "text/plain; charset=utf-8"
    return json.dumps({"ok": ok}).encode(), "application/json"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: ``status`` (with ``headers``) after ``delay_s``. ``body`` None means what
    the impersonated service answers for that status (Resend JSON, Slack text, JSON)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass(frozen=True)
class Drop:
    """Read the request, then drop the connection with a TCP reset: before any byte of the answer
    or, with ``partial``, after the status line, the headers and a few bytes of the body."""

    partial: bool = False
    delay_s: float = 0.0


Behaviour = int | tuple[int, Mapping[str, str]] | Answer | Drop
"""A scripted reply: a status, a status with headers, an ``Answer`` or a ``Drop``."""


def _as_behaviour(reply: Behaviour) -> Answer | Drop:
    if isinstance(reply, int):
        return Answer(reply)
    if isinstance(reply, tuple):
        return Answer(reply[0], reply[1])
    return reply


class FakeUpstream:
    """A real HTTP server in a thread: records every complete request on arrival, then behaves as
    the path's script (one reply per request), or else its ``always`` reply, or else answers 200.
    A request whose body is cut short (its sender was killed) is only counted, as ``truncated``:
    a real receiver would not act on it."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._scripts: dict[str, list[Answer | Drop]] = {}
        self._always: dict[str, Answer | Drop] = {}
        self._closing = threading.Event()
        self.inflight = 0  # requests arrived and not answered yet
        self.truncated = 0  # requests whose sender went away before the body was complete
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:  # the sender died mid-request: nothing to act on
                    with upstream._lock:
                        upstream.truncated += 1
                    self.close_connection = True
                    return
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded(self.command, path, headers, raw, time.monotonic())
                behaviour = upstream._record(recorded)
                try:
                    if behaviour.delay_s and upstream._closing.wait(behaviour.delay_s):
                        self._reset()  # the test is over: do not keep the relay waiting
                    elif isinstance(behaviour, Drop):
                        if behaviour.partial:
                            self.wfile.write(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b'Content-Length: 64\r\n\r\n{"id": "e2e-'
                            )
                        self._reset()
                    else:
                        self._answer(path, behaviour)
                except OSError:
                    self.close_connection = True  # the relay went away (killed): nobody to tell
                finally:
                    with upstream._lock:
                        upstream.inflight -= 1

            def _answer(self, path: str, answer: Answer) -> None:
                if answer.body is None:
                    body, content_type = _answer_body(path, answer.status)
                else:
                    body, content_type = answer.body, answer.content_type
                self.send_response(answer.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _reset(self) -> None:
                """Close with SO_LINGER 0: the peer gets a RST, not an orderly end."""
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

            do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a dropped or killed peer is the point of these tests

            def shutdown_request(self, request: Any) -> None:
                with contextlib.suppress(OSError):
                    super().shutdown_request(request)

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # handlers waiting out a delay give up
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _record(self, request: Recorded) -> Answer | Drop:
        with self._lock:
            self._requests.append(request)
            self.inflight += 1
            script = self._scripts.get(request.path)
            if script:
                return script.pop(0)
            return self._always.get(request.path, Answer(200))

    def script(self, path: str, replies: list[Behaviour]) -> None:
        """Behave as ``replies`` for the next requests to ``path``, one each, in turn."""
        with self._lock:
            self._scripts[path] = [_as_behaviour(r) for r in replies]

    def always(self, path: str, reply: Behaviour | None) -> None:
        """Once the script is used up, behave as ``reply`` for every request (None: 200)."""
        with self._lock:
            if reply is None:
                self._always.pop(path, None)
            else:
                self._always[path] = _as_behaviour(reply)

    def by_key(self, path: str) -> dict[str | None, list[Recorded]]:
        """The requests to ``path`` grouped by Idempotency-Key, in arrival order."""
        found: dict[str | None, list[Recorded]] = {}
        for request in self.requests(path):
            found.setdefault(request.idempotency_key, []).append(request)
        return found

    def requests(self, path: str | None = None) -> list[Recorded]:
        """Every request received so far (to ``path``, if given), in arrival order."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 15.0) -> list[Recorded]:
        """Poll until at least ``count`` requests to ``path`` arrived; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.requests(path)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(r.method, r.path) for r in self.requests()]
                raise AssertionError(
                    f"{len(found)} of {count} requests to {path} after {timeout_s} s; saw {seen}"
                )
            time.sleep(0.02)
