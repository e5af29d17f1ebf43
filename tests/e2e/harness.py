"""The end-to-end harness: a fake upstream, test projects and real `relay serve` processes.

- ``FakeUpstream``: a real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer`` in a thread)
  that impersonates Resend (``POST /emails``), a Slack incoming webhook (``POST /slack/...``) and
  the HTTP sink's target (``POST /membership``). It records every complete request on arrival and
  answers from a script per path (``upstream.script("/membership", [500, 200])``;
  ``(429, {"Retry-After": "1"})`` adds headers), then from the path's ``always`` reply, then 200.
  A scripted reply can also delay its answer (``Answer(delay_s=...)``), drop the connection before
  or in the middle of the answer (``Drop``), or send any body with any content type. Requests in
  flight (arrived, not answered yet) and requests cut short by their sender are counted.
- ``E2EProject``: a project directory (rules.yaml, templates/, samples/, relay.db) whose sinks
  point at the fake upstream; ``with_env`` adds environment variables, ``write_rules`` replaces
  rules.yaml atomically (a reload never sees half a file). ``StoreView`` reads its SQLite store
  read-only, to prove what was (not) stored and that the relay is idle.
- ``RelayProcess``: one ``python -m relay serve --port P`` in a project directory, with its own log
  file (restarts on the same port keep every generation's log); ``Fleet``: the relay processes of
  one test, all stopped at its end, their logs printed if it failed.
- ``scrape``/``value``: /metrics parsed with the Prometheus client's own parser; ``run_cli``: a
  ``python -m relay ...`` subprocess against a project's store.

Waits poll with a deadline; nothing sleeps for a backoff. The fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

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


# --- projects and relay processes -------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class E2EProject:
    """A project directory for `relay serve`: rules.yaml, templates/, samples/ and relay.db; its
    relay (and CLI) processes get ``extra_env`` on top of the harness's environment."""

    root: Path
    upstream: FakeUpstream
    extra_env: dict[str, str] = field(default_factory=dict, kw_only=True)  # on top of env()

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
            **self.extra_env,
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


def with_env(project: E2EProject, **extra_env: str) -> E2EProject:
    """The same project, its processes run with ``extra_env`` too."""
    return dataclasses.replace(project, extra_env={**project.extra_env, **extra_env})


def write_rules(project: E2EProject, text: str) -> None:
    """Replace rules.yaml in one step (write a sibling file, then rename it over)."""
    target = project.root / "rules.yaml"
    staging = project.root / ".rules.yaml.new"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, target)


@dataclass
class RelayProcess:
    """One `relay serve` subprocess (with ``serve_args``); its stdout and stderr go to a log file
    of its own, even when it reuses a predecessor's port (``generation``)."""

    project: E2EProject
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    generation: int = 0
    serve_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + SOURCE_PATH

    def start(self) -> RelayProcess:
        self.log_path = self.project.root / f"relay-{self.port}-{self.generation}.log"
        command = ["serve", *self.serve_args, "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", *command],
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

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """SIGTERM; wait for the exit. Returns how long the process took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout_s)
        return time.monotonic() - started

    def log_lines(self) -> list[dict[str, Any]]:
        """The relay's JSON log lines (other output, e.g. from uvicorn, is skipped)."""
        lines = []
        for text in self.log().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(text)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def metrics(self) -> Samples:
        return scrape(self.url)

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


class Fleet:
    """Every relay a test starts; all stopped at the end, their logs printed on failure."""

    def __init__(self) -> None:
        self.relays: list[RelayProcess] = []

    def start(self, project: E2EProject, port: int | None = None) -> RelayProcess:
        relay = RelayProcess(project, generation=len(self.relays))
        if port is not None:
            relay.port = port
        self.relays.append(relay)
        return relay.start()

    def close(self, *, show_logs: bool) -> None:
        for relay in self.relays:
            relay.stop()
        if show_logs:
            for relay in self.relays:
                code = relay.proc and relay.proc.returncode
                print(f"--- relay {relay.generation} on port {relay.port} (exit {code}) ---")
                print(relay.log())


def wait_until(what: str, check: Any, timeout_s: float = 15.0, every_s: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy, which is returned; fail at the
    deadline, naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout_s} s (last: {result!r})")
        time.sleep(every_s)


# --- requests, metrics and the CLI -----------------------------------------------------------


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


def user_created(project: E2EProject, n: int | None = None) -> dict[str, Any]:
    """The shipped user.created sample; with ``n``, a distinct user n (user{n}@example.com)."""
    event = project.sample("user.created.json")
    if n is not None:
        event = copy.deepcopy(event)
        event["data"]["id"] = f"user_e2e_{n:03d}"
        event["data"]["first_name"] = f"User{n}"
        for address in event["data"]["email_addresses"]:
            if address["id"] == event["data"]["primary_email_address_id"]:
                address["email_address"] = f"user{n}@example.com"
    return event


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    """GET /metrics, parsed by prometheus_client's parser: {(sample name, labels): value}."""
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 if the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def run_cli(
    project: E2EProject, *args: str, timeout_s: float = 30.0, database: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m relay ARGS --database <the project's store>`` in a subprocess, in the project
    directory with the project's environment (``database=False``: no ``--database``)."""
    url = f"sqlite:///{project.root / 'relay.db'}"
    store = ["--database", url] if database else []
    return subprocess.run(
        [sys.executable, "-m", "relay", *args, *store],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
