"""More end-to-end hooks, on top of ``tests/e2e/conftest.py`` (which stays as it is).

- ``FaultyUpstream``: a stand-in for the harness's fake Resend/Slack/HTTP upstream (same
  ``requests``, ``wait_for`` and ``script`` API, same default answers), whose scripted replies
  can also delay their answer, drop the connection before or in the middle of the answer, or
  send any body with any content type; a path can answer with a fixed reply for as long as a
  test wants (``always``), and the requests in flight (arrived, not yet answered) are counted.
- ``ProjectWithEnv``: a harness project with extra or changed environment variables, and
  ``write_rules``, which replaces rules.yaml atomically (a reload never sees half a file).
- ``Fleet``: the relay processes of one test; each start gets its own log file (restarts on the
  same port keep every generation's log), and the logs are printed only if the test failed.
- ``scrape``/``value``: /metrics parsed with the Prometheus client's own parser.
- ``run_cli``: a ``python -m relay ...`` subprocess against a project's store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    STOP_TIMEOUT_S,
    E2EProject,
    Recorded,
    RelayProcess,
    RequestLog,
    _answer_body,
)

# --- the faulty upstream -----------------------------------------------------------------------


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


Behaviour = int | Answer | Drop


def _as_behaviour(reply: Behaviour | tuple[int, Mapping[str, str]]) -> Answer | Drop:
    if isinstance(reply, int):
        return Answer(reply)
    if isinstance(reply, tuple):
        return Answer(reply[0], reply[1])
    return reply


class FaultyUpstream(RequestLog):
    """A real HTTP server in a thread: records every complete request on arrival, then behaves as
    the path's script (one reply per request), or else its ``always`` reply, or else answers 200.
    A request whose body is cut short (its sender was killed) is only counted, as ``truncated``:
    a real receiver would not act on it."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
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

        self._serve(Server(("127.0.0.1", port), Handler))

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # handlers waiting out a delay give up
        super().__exit__(*exc)

    def _record(self, request: Recorded) -> Answer | Drop:
        with self._lock:
            self._requests.append(request)
            self.inflight += 1
            script = self._scripts.get(request.path)
            if script:
                return script.pop(0)
            return self._always.get(request.path, Answer(200))

    def script(
        self, path: str, replies: list[Behaviour] | list[Behaviour | tuple[int, Mapping[str, str]]]
    ) -> None:
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


# --- projects ----------------------------------------------------------------------------------


@dataclass
class ProjectWithEnv(E2EProject):
    """A harness project whose relay (and CLI) processes get ``extra_env`` on top."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


def with_env(project: E2EProject, **extra_env: str) -> ProjectWithEnv:
    return ProjectWithEnv(project.root, project.upstream, dict(extra_env))


def write_rules(project: E2EProject, text: str) -> None:
    """Replace rules.yaml in one step (write a sibling file, then rename it over)."""
    target = project.root / "rules.yaml"
    staging = project.root / ".rules.yaml.new"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, target)


# --- relay processes ---------------------------------------------------------------------------


@dataclass
class Relay(RelayProcess):
    """A `relay serve` whose log file is its own, even when it reuses a predecessor's port."""

    generation: int = 0

    def start(self) -> Relay:
        self.log_path = self.project.root / f"relay-{self.port}-{self.generation}.log"
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

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return scrape(self.url)


class Fleet:
    """Every relay a test starts; all stopped at the end, their logs printed on failure."""

    def __init__(self) -> None:
        self.relays: list[Relay] = []

    def start(self, project: E2EProject, port: int | None = None) -> Relay:
        relay = Relay(project, generation=len(self.relays))
        if port is not None:
            relay.port = port
        self.relays.append(relay)
        return relay.start()

    def logs(self) -> str:
        return "\n".join(r.log() for r in self.relays)

    def close(self, *, show_logs: bool) -> None:
        for relay in self.relays:
            relay.stop()
        if show_logs:
            for relay in self.relays:
                code = relay.proc and relay.proc.returncode
                print(f"--- relay {relay.generation} on port {relay.port} (exit {code}) ---")
                print(relay.log())


@contextlib.contextmanager
def fleet_for(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A ``Fleet`` for one test (a test module's ``fleet`` fixture yields from this)."""
    failed_before = request.session.testsfailed
    relays = Fleet()
    try:
        yield relays
    finally:
        # the call phase's report is counted before teardown: print the logs only for a failure
        relays.close(show_logs=request.session.testsfailed > failed_before)


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


# --- metrics and the CLI -----------------------------------------------------------------------

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


__all__ = [
    "Answer",
    "Drop",
    "FaultyUpstream",
    "Fleet",
    "ProjectWithEnv",
    "Relay",
    "fleet_for",
    "run_cli",
    "scrape",
    "value",
    "wait_until",
    "with_env",
    "write_rules",
]
