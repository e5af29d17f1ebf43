"""The store guarded against its operators' mistakes, with real `relay serve` processes: one
delivering relay per SQLite file, and never another application's database."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.e2e.harness import (
    SLACK_PATH,
    E2EProject,
    Fleet,
    RelayProcess,
    free_port,
    run_cli,
    user_created,
    wait_until,
    with_env,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, FakeUpstream

pytestmark = pytest.mark.e2e


def serve_until_exit(project: E2EProject, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay serve ARGS` expected to refuse to start: run it to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", str(free_port()), *args],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_second_relay_on_one_sqlite_file_refuses_naming_the_first(
    e2e_project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """While a relay delivers from relay.db (its sends held up 3 s by a slow upstream), a
    second `relay serve` on the same file exits at once, naming the first one's pid, host and
    start time, and releases none of its leases: every delivery is sent exactly once. An
    ingest-only relay beside it starts, and the read and replay commands keep working."""
    for path in (EMAILS_PATH, SLACK_PATH):
        upstream.always(path, Answer(200, delay_s=3))
    first = fleet.start(e2e_project)
    for n in range(4):
        assert first.post(user_created(e2e_project, n)).status_code == 200
    upstream.wait_for(EMAILS_PATH, 4)  # in flight: leased, being sent

    second = serve_until_exit(e2e_project)
    assert second.returncode == 1, second.stderr
    assert first.proc is not None
    assert (
        f"relay: not starting: {e2e_project.root / 'relay.db'} is in use by another relay (pid"
        f" {first.proc.pid} on host {socket.gethostname()}, since 20"
    ) in second.stderr
    assert "several replicas need PostgreSQL" in second.stderr

    ingest_only = RelayProcess(e2e_project, serve_args=("--no-worker",))
    fleet.relays.append(ingest_only)
    ingest_only.start()
    assert ingest_only.post(user_created(e2e_project, 10)).status_code == 200
    listed = run_cli(e2e_project, "deliveries", "--json")
    assert listed.returncode == 0, listed.stderr
    replayed = run_cli(e2e_project, "replay", "--dead", "--yes")
    assert replayed.returncode == 0, replayed.stderr

    rows = e2e_project.db.wait_idle(timeout_s=30)
    assert len(rows) == 10
    assert {row["status"] for row in rows} == {"delivered"}
    emails = upstream.by_key(EMAILS_PATH)
    assert len(emails) == 5
    assert all(len(requests) == 1 for requests in emails.values()), emails
    alerts = [request.raw for request in upstream.requests(SLACK_PATH)]  # no idempotency key
    assert len(alerts) == len(set(alerts)) == 5


def test_the_lock_is_free_again_once_the_relay_is_gone(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """After the first relay is killed (SIGKILL: no clean-up), the next one starts on its file."""
    first = fleet.start(e2e_project)
    first.kill()
    fleet.start(e2e_project)


def test_serve_refuses_another_apps_sqlite_file_and_leaves_it_as_it_was(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """RELAY_DATABASE_URL pointing at another application's SQLite file: `relay serve` and
    `relay db upgrade` refuse, saying what the file holds; the file is byte for byte unchanged
    and still in its own journal mode."""
    path = e2e_project.root / "shop.db"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT);"
        "INSERT INTO products (name) VALUES ('tea'); PRAGMA user_version = 12;"
    )
    raw.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    project = with_env(e2e_project, RELAY_DATABASE_URL=f"sqlite:///{path}")

    served = serve_until_exit(project)
    upgraded = run_cli(project, "db", "upgrade", database=False)
    assert served.returncode == upgraded.returncode == 1
    expected = (
        f"SQLite store {path}: not a relay database: it holds table products (user_version 12)"
    )
    assert f"relay: not starting: open {expected}" in served.stderr
    assert f"relay db upgrade: upgrade {expected}" in upgraded.stderr
    assert "newer relay" not in served.stderr + upgraded.stderr
    time.sleep(0.1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        raw.close()
    wait_until("no WAL file beside it", lambda: not (path.parent / "shop.db-wal").exists())
