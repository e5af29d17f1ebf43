"""The end-to-end harness: test projects and real `relay serve` processes (the fake upstream is
``tests.e2e.upstream``).

- ``FakeUpstream`` (in ``tests.e2e.upstream``, re-exported here): a real HTTP server that
  impersonates Resend, a Slack incoming webhook and the HTTP sink's target, answering from a
  script per path.
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
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from relay.secret import Secret
from relay.sources.signing import sign
from tests.conftest import ROOT, TEST_SECRET
from tests.e2e.upstream import FakeUpstream

RESEND_API_KEY = "re_e2e_test_key_0123456789"
SLACK_PATH = "/slack/T000/B000/e2e-slack-token"
MEMBERSHIP_PATH = "/membership"
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
    open_files: int | None = None  # RLIMIT_NOFILE of the process (soft and hard), if given
    ops_port: int | None = None  # --ops-port: /healthz, /readyz and /metrics there

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        """Where /readyz and /metrics answer: the ops port, if it has one."""
        return self.url if self.ops_port is None else f"http://127.0.0.1:{self.ops_port}"

    @property
    def webhook_url(self) -> str:
        return self.url + SOURCE_PATH

    def start(self) -> RelayProcess:
        self.log_path = self.project.root / f"relay-{self.port}-{self.generation}.log"
        command = ["serve", *self.serve_args, "--port", str(self.port)]
        if self.ops_port is not None:
            command += ["--ops-port", str(self.ops_port)]
        limit = self.open_files
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", *command],
                cwd=self.project.root,
                env=self.project.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if limit is None else lambda: _limit_open_files(limit),
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
                if httpx.get(self.ops_url + "/readyz", timeout=1).status_code == 200:
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
        """The relay's JSON log lines (in JSON mode every line is one; tests/e2e/test_logs.py)."""
        lines = []
        for text in self.log().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(text)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def metrics(self) -> Samples:
        return scrape(self.ops_url)

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


def _limit_open_files(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


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
