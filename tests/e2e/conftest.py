"""End-to-end fixtures: a fake upstream HTTP server, a test project, real `relay serve` processes.

``FakeUpstream`` is a real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer`` in a thread)
that impersonates Resend (``POST /emails``), a Slack incoming webhook (``POST /slack/...``) and the
HTTP sink's target (``POST /membership``). It records every request and answers from a script per
path (``upstream.script("/membership", [500, 200])``; ``(429, {"Retry-After": "1"})`` adds
headers); once a path's script is used up it answers 200.

``RelayProcess`` runs ``python -m relay serve --port P`` in a project directory (rules.yaml,
templates/, samples/) whose sinks point at the fake upstream, with its SQLite store in the same
directory. ``StoreView`` reads that store read-only, to prove what was (not) stored and that the
relay is idle. Waits poll with a deadline; nothing sleeps for a backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from relay.secret import Secret
from relay.sources.signing import sign
from tests.conftest import ROOT, TEST_SECRET

RESEND_API_KEY = "re_e2e_test_key_0123456789"
SLACK_PATH = "/slack/T000/B000/e2e-slack-token"
MEMBERSHIP_PATH = "/membership"
EMAILS_PATH = "/emails"
SOURCE_PATH = "/webhooks/clerk"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

Reply = int | tuple[int, Mapping[str, str]]

RULES = """\
# The shipped rules, with every sink pointed at the test's fake upstream and short backoffs.
version: 1

sources:
  clerk:
    path: {source_path}
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}

sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
    base_url: {upstream}
    retry: {{first_backoff_s: 0.2, max_backoff_s: 1}}

  slack-signups:
    type: slack
    webhook_url: ${{SLACK_WEBHOOK_URL}}
    retry: {{max_attempts: 8, first_backoff_s: 0.2, max_backoff_s: 1}}

  membership-sync:
    type: http
    url: ${{MEMBERSHIP_SYNC_URL}}
    method: POST
    timeout_s: 10
    retry: {{first_backoff_s: {membership_first_backoff_s}, max_backoff_s: 5}}

rules:
  - name: welcome-email
    events: user.created
    when: primary_email(data)
    send:
      - sink: email
        template: welcome-email.yaml
        to: "{{{{ primary_email(data) }}}}"

  - name: signup-alert
    events: user.created
    send:
      - sink: slack-signups
        template: signup-alert.yaml

  - name: membership-sync
    events:
      - organizationMembership.created
      - organizationMembership.deleted
    send:
      - sink: membership-sync
        template: membership-sync.yaml
"""


# --- the fake upstream -----------------------------------------------------------------------


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
    if path == EMAILS_PATH:
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


class RequestLog:
    """What the fake upstreams share: the requests received, waiting for them, and their
    server, served from a thread while the fake is used as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []

    def _serve(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

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


class FakeUpstream(RequestLog):
    """A real HTTP server in a thread that records requests and answers from per-path scripts."""

    def __init__(self) -> None:
        super().__init__()
        self._scripts: dict[str, list[Reply]] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real services

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:  # the client died mid-request: a real server drops it too
                    self.close_connection = True
                    return
                path = self.path.split("?", 1)[0]
                status, extra = upstream._record(
                    Recorded(
                        self.command,
                        path,
                        {k.lower(): v for k, v in self.headers.items()},
                        raw,
                        time.monotonic(),
                    )
                )
                body, content_type = _answer_body(path, status)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded requests are the log

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._serve(Server(("127.0.0.1", 0), Handler))

    def _record(self, request: Recorded) -> tuple[int, Mapping[str, str]]:
        with self._lock:
            self._requests.append(request)
            script = self._scripts.get(request.path)
            reply: Reply = script.pop(0) if script else 200
        return (reply, {}) if isinstance(reply, int) else reply

    def script(self, path: str, replies: list[Reply]) -> None:
        """Answer the next requests to ``path`` with ``replies`` in turn, then 200."""
        with self._lock:
            self._scripts[path] = list(replies)


# --- the relay's store, read-only --------------------------------------------------------------


@dataclass(frozen=True)
class StoreView:
    """Read-only SQL views of the relay's SQLite file (a fresh connection per query)."""

    path: Path

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def events(self) -> list[dict[str, Any]]:
        return self.query("SELECT id, source, message_id, type FROM events ORDER BY received_at")

    def deliveries(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT d.id, d.event_id, e.message_id, d.rule, d.sink, d.idempotency_key, d.status,"
            " d.attempts, d.next_attempt_at, d.lease_until, d.last_error"
            " FROM deliveries d JOIN events e ON e.id = d.event_id ORDER BY d.created_at, d.id"
        )

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT number, status_code, error, outcome FROM attempts WHERE delivery_id = ?"
            " ORDER BY number",
            (delivery_id,),
        )

    def wait(
        self,
        condition: Callable[[list[dict[str, Any]]], bool],
        timeout_s: float = 15.0,
        what: str = "condition",
    ) -> list[dict[str, Any]]:
        """Poll the deliveries until ``condition(deliveries)`` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.deliveries()
            if condition(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached after {timeout_s} s: {rows}")
            time.sleep(0.02)

    def wait_idle(self, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Wait until every delivery is final (delivered or dead): nothing more will be sent."""
        return self.wait(
            lambda rows: all(r["status"] in ("delivered", "dead") for r in rows),
            timeout_s,
            "every delivery final",
        )


# --- the relay process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class E2EProject:
    """A project directory for `relay serve`: rules.yaml, templates/, samples/ and relay.db."""

    root: Path
    upstream: FakeUpstream

    @property
    def db(self) -> StoreView:
        return StoreView(self.root / "relay.db")

    def env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RELAY_", "RESEND_", "CLERK_", "SLACK_", "MEMBERSHIP_"))
        }
        return {
            **keep,
            "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET,
            "RESEND_API_KEY": RESEND_API_KEY,
            "SLACK_WEBHOOK_URL": self.upstream.url + SLACK_PATH,
            "MEMBERSHIP_SYNC_URL": self.upstream.url + MEMBERSHIP_PATH,
            "RELAY_DATABASE_URL": f"sqlite:///{self.root / 'relay.db'}",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_SHUTDOWN_GRACE_S": "2",
            "PYTHONUNBUFFERED": "1",
        }

    def sample(self, name: str) -> dict[str, Any]:
        event: dict[str, Any] = json.loads((self.root / "samples" / name).read_text("utf-8"))
        return event


def make_project(
    root: Path, upstream: FakeUpstream, *, membership_first_backoff_s: float = 0.2
) -> E2EProject:
    root.mkdir(parents=True)
    shutil.copytree(ROOT / "templates", root / "templates")
    shutil.copytree(ROOT / "samples", root / "samples")
    rules = RULES.format(
        source_path=SOURCE_PATH,
        upstream=upstream.url,
        membership_first_backoff_s=membership_first_backoff_s,
    )
    (root / "rules.yaml").write_text(rules, encoding="utf-8")
    return E2EProject(root, upstream)


@dataclass
class RelayProcess:
    """One `relay serve` subprocess; its stdout and stderr go to a log file."""

    project: E2EProject
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + SOURCE_PATH

    def start(self) -> RelayProcess:
        self.log_path = self.project.root / f"relay-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--port", str(self.port)],
                cwd=self.project.root,
                env=self.project.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"relay exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"relay not ready after {timeout_s} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease release, nothing flushed beyond what was committed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def post(
        self,
        body: bytes | Mapping[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> httpx.Response:
        """POST ``body`` to the webhook path, signed like Svix unless ``headers`` are given."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = dict(headers) if headers is not None else signed_headers(raw, msg_id, timestamp)
        return httpx.post(self.webhook_url, content=raw, headers=sent, timeout=timeout_s)


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signed_headers(
    body: bytes,
    msg_id: str | None = None,
    timestamp: int | None = None,
    secret: str = TEST_SECRET,
) -> dict[str, str]:
    """Svix's headers for ``body``: a fresh svix-id and the current timestamp unless given."""
    msg_id = msg_id or new_msg_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": sign(Secret(secret), msg_id, timestamp, body),
        "content-type": "application/json",
    }


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def e2e_project(tmp_path: Path, upstream: FakeUpstream) -> E2EProject:
    return make_project(tmp_path / "project", upstream)


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    """Every relay process a test started; all stopped at teardown, their logs printed (pytest
    shows them when the test fails)."""
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()
        print(f"--- relay on port {relay.port} (exit {relay.proc and relay.proc.returncode}) ---")
        print(relay.log())


@pytest.fixture
def start_relay(e2e_project: E2EProject, relays: list[RelayProcess]) -> Callable[[], RelayProcess]:
    """Start a `relay serve` on the test project (again: same store, new port) and wait ready."""

    def start() -> RelayProcess:
        relay = RelayProcess(e2e_project)
        relays.append(relay)
        return relay.start()

    return start


@pytest.fixture
def relay(start_relay: Callable[[], RelayProcess]) -> RelayProcess:
    return start_relay()
