"""A hostile internet against a real `relay serve` and real sockets: the ops port, connections
that never send anything, a crowd of half-sent bodies, the open-file limit, and a body too large
sent by a client that writes it all before reading (urllib)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    SOURCE_PATH,
    E2EProject,
    Fleet,
    RelayProcess,
    free_port,
    signed_headers,
    user_created,
    wait_until,
    with_env,
)

pytestmark = pytest.mark.e2e


def start(fleet: Fleet, project: E2EProject, **fields: Any) -> RelayProcess:
    relay = RelayProcess(project, generation=len(fleet.relays), **fields)
    fleet.relays.append(relay)
    return relay.start()


@contextlib.contextmanager
def sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to the relay that send nothing (some may wait in its backlog)."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the relay closed this connection (reading it gives EOF, or a reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def head(relay: RelayProcess, body: bytes, *, length: int | None = None) -> bytes:
    """A signed webhook request's head for ``body`` (its Content-Length ``length`` if given)."""
    lines = [f"POST {SOURCE_PATH} HTTP/1.1", f"Host: 127.0.0.1:{relay.port}"]
    lines += [f"{k}: {v}" for k, v in signed_headers(body).items()]
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(sock: socket.socket) -> bytes:
    """Everything the relay sends on ``sock`` until it closes it."""
    sock.settimeout(10)
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_ops_port_carries_health_and_metrics_and_the_public_port_only_webhooks(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """With --ops-port, /healthz, /readyz and /metrics answer only there; the public port
    answers 404 to them and takes the webhooks; a POST to the ops port is 404 and stores
    nothing. One process, one store: the metrics on the ops port count the public port's event."""
    relay = start(fleet, e2e_project, ops_port=free_port())
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(relay.url + path).status_code == 404
        assert httpx.get(relay.ops_url + path).status_code == 200
    assert relay.post(user_created(e2e_project, 1)).status_code == 200
    event = json.dumps(user_created(e2e_project, 2)).encode()
    on_ops = httpx.post(relay.ops_url + SOURCE_PATH, content=event, headers=signed_headers(event))
    assert on_ops.status_code == 404
    assert len(e2e_project.db.events()) == 1
    metrics = httpx.get(relay.ops_url + "/metrics").text
    assert (
        'relay_events_received_total{outcome="accepted",reason="",source="clerk",'
        'type="user.created"} 1.0'
    ) in metrics
    assert httpx.get(relay.ops_url + "/readyz").json()["status"] == "ready"


def test_connections_that_send_nothing_or_trickle_headers_are_closed(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """With RELAY_IDLE_TIMEOUT_S=1: 50 connections that never send a byte, and one that sends
    a request's head a byte a quarter second (each byte would restart uvicorn's keep-alive
    timer), are all closed by the relay within a few seconds; a webhook still goes through."""
    relay = start(fleet, with_env(e2e_project, RELAY_IDLE_TIMEOUT_S="1"))
    with sockets(relay.port, 51) as opened:
        trickler = opened[-1]
        request = head(relay, b"{}")
        started = time.monotonic()
        for byte in request[:12]:
            with contextlib.suppress(OSError):
                trickler.send(bytes([byte]))
            time.sleep(0.25)
        wait_until(
            "every idle connection closed by the relay",
            lambda: all(closed_by_peer(sock) for sock in opened),
            timeout_s=6,
        )
        took_s = time.monotonic() - started
    print(f"\n51 idle connections closed within {took_s:.1f} s (idle timeout 1 s)")
    assert relay.post(user_created(e2e_project, 1)).status_code == 200


def test_at_the_open_file_limit_idle_sockets_cannot_keep_a_webhook_out(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """A relay limited to 400 open files (so at most 144 connections), 600 idle connections
    to it: a webhook posted then is answered at once (the connection idle longest made room for
    it), and the relay writes no traceback."""
    relay = start(fleet, with_env(e2e_project, RELAY_IDLE_TIMEOUT_S="60"), open_files=400)
    with sockets(relay.port, 600):
        time.sleep(0.5)
        started = time.monotonic()
        response = relay.post(user_created(e2e_project, 1), timeout_s=10)
        took_s = time.monotonic() - started
    print(f"\nwebhook through 600 idle connections at 400 open files: {took_s:.2f} s")
    assert response.status_code == 200
    assert "Traceback" not in relay.log()


def test_a_failing_accept_is_logged_once_per_interval_without_a_traceback(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """RELAY_MAX_CONNECTIONS set above what 200 open files allow, 400 connections: accept()
    fails (EMFILE) every second for several seconds; the relay logs one line for it, with the
    count and no traceback, and answers again once the connections are gone."""
    project = with_env(e2e_project, RELAY_MAX_CONNECTIONS="1000", RELAY_IDLE_TIMEOUT_S="60")
    relay = start(fleet, project, open_files=200)
    with sockets(relay.port, 400):
        time.sleep(4)
    wait_until("the relay answering again", lambda: relay.metrics(), timeout_s=10)
    lines = [line for line in relay.log_lines() if line["msg"].startswith("cannot accept")]
    assert len(lines) == 1, lines
    assert lines[0]["error"] == "Too many open files"
    assert "Traceback" not in relay.log()
    assert "out of system resource" not in relay.log()
    assert any(
        line["msg"].startswith("RELAY_MAX_CONNECTIONS is more") for line in relay.log_lines()
    )


def test_requests_past_the_connection_limit_are_answered_503_with_retry_after(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """RELAY_MAX_CONNECTIONS=16, all 16 busy sending a body slowly: a 17th connection gets a
    503 with Retry-After (read whole, not reset); once one of them is done, webhooks go
    through again."""
    relay = start(fleet, with_env(e2e_project, RELAY_MAX_CONNECTIONS="16"))
    body = json.dumps(user_created(e2e_project, 1)).encode()
    with sockets(relay.port, 16) as busy:
        for sock in busy:
            sock.sendall(head(relay, body) + body[:10])  # a request in progress
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as extra:
            extra.sendall(head(relay, body) + body)
            refused = answer_of(extra)
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b"retry-after: 1" in refused.lower()
    assert json.loads(refused.split(b"\r\n\r\n", 1)[1]) == {
        "status": "busy",
        "reason": "too many connections",
    }
    assert relay.post(user_created(e2e_project, 2)).status_code == 200


def test_half_sent_bodies_cannot_hold_more_than_the_buffer_budget(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """RELAY_MAX_BUFFERED_BYTES=4 MiB and 1 MiB bodies: four requests that send half of their
    body hold the whole budget; the next request, however small, is answered 503 with
    Retry-After before its body is read (and reads it: no reset); once they are gone, a webhook
    goes through."""
    relay = start(fleet, with_env(e2e_project, RELAY_MAX_BUFFERED_BYTES=str(4 * 1024 * 1024)))
    size = 1024 * 1024  # max_body_bytes: four of them are the whole budget
    with sockets(relay.port, 4) as holders:
        for sock in holders:
            sock.sendall(head(relay, b"", length=size) + b" " * (size // 2))
        time.sleep(0.5)
        body = json.dumps(user_created(e2e_project, 1)).encode()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as extra:
            extra.sendall(head(relay, body) + body)
            refused = answer_of(extra)
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b"retry-after: 1" in refused.lower()
    assert json.loads(refused.split(b"\r\n\r\n", 1)[1]) == {"status": "busy", "retry": True}
    wait_until(
        "a webhook accepted again",
        lambda: relay.post(user_created(e2e_project, 2)).status_code == 200,
        timeout_s=5,
    )


def test_urllib_reads_every_413_for_a_3_mib_body(e2e_project: E2EProject, fleet: Fleet) -> None:
    """urllib writes a whole 3 MiB body before it reads the answer: 40 tries in a row, each
    gets the 413 (the relay drains what it does not read before closing), none a reset."""
    relay = start(fleet, e2e_project)
    body = b"x" * (3 * 1024 * 1024)
    outcomes: dict[str, int] = {}
    for _ in range(40):
        request = urllib.request.Request(  # noqa: S310 (http to the local test relay)
            relay.webhook_url, data=body, headers=signed_headers(body), method="POST"
        )
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 (a local test server)
            outcome = "2xx"
        except urllib.error.HTTPError as exc:
            outcome = str(exc.code)
        except (urllib.error.URLError, ConnectionError) as exc:
            outcome = type(getattr(exc, "reason", exc)).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"\n40 urllib posts of 3 MiB: {outcomes}")
    assert outcomes == {"413": 40}


def backlog(project: E2EProject, pending: int) -> None:
    """``pending`` deliveries waiting in the project's store (one per event), as after a sink
    was down for a while: relay's schema, then rows in bulk."""
    import asyncio
    import sqlite3

    from relay.store import SQLiteStore

    path = project.root / "relay.db"
    asyncio.run(SQLiteStore(path).upgrade())
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events VALUES (?, 'clerk', ?, 'user.created', ?, ?)",
            ((f"evt_b{i}", f"msg_b{i}", now, b'{"type":"user.created"}') for i in range(pending)),
        )
        conn.executemany(
            "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key,"
            " status, next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, 'signup-alert', 0, 'slack-signups', ?, 'pending', ?, ?, ?)",
            ((f"dlv_b{i}", f"evt_b{i}", f"k{i}", now, now, now) for i in range(pending)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_clients_fetching_metrics_in_a_loop_do_not_stall_ingest(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """50,000 deliveries pending (each /metrics used to count them on ingest's store thread):
    16 clients fetching /metrics as fast as they are answered get about two answers a second
    each, and webhooks posted meanwhile are answered about as fast as without them (before:
    each queued behind the clients' scans: 4x slower here, and more the longer the backlog)."""
    backlog(e2e_project, 50_000)
    relay = start(fleet, e2e_project, serve_args=("--no-worker",))

    def post_times(first: int, *, at_least: int, seconds: float = 0.0) -> list[float]:
        """Post webhooks one after the other (``at_least`` of them, and for ``seconds``)."""
        took: list[float] = []
        until = time.monotonic() + seconds
        with httpx.Client(timeout=30) as client:  # one connection, as Svix keeps one
            while len(took) < at_least or time.monotonic() < until:
                body = json.dumps(user_created(e2e_project, first + len(took))).encode()
                started = time.monotonic()
                posted = client.post(relay.webhook_url, content=body, headers=signed_headers(body))
                took.append(time.monotonic() - started)
                assert posted.status_code == 200
        return sorted(took)

    alone = post_times(0, at_least=30)
    stop = threading.Event()
    answered = [0] * 16

    def fetch(slot: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                assert client.get(relay.url + "/metrics").status_code == 200
                answered[slot] += 1

    flood = [threading.Thread(target=fetch, args=(slot,)) for slot in range(16)]
    flood_started = time.monotonic()
    for thread in flood:
        thread.start()
    try:
        time.sleep(0.5)
        beside = post_times(1000, at_least=30, seconds=3.0)
    finally:
        stop.set()
        for thread in flood:
            thread.join(30)
    seconds = time.monotonic() - flood_started
    median_alone, median_beside = alone[len(alone) // 2], beside[len(beside) // 2]
    print(
        f"\n50,000 pending: webhook median {median_alone * 1000:.1f} ms alone,"
        f" {median_beside * 1000:.1f} ms beside 16 /metrics clients, who got"
        f" {sum(answered) / seconds:.1f} answers/s"
    )
    assert median_beside <= 3 * median_alone + 0.03
    assert sum(answered) / seconds <= 16 * 3


def rss_mb(relay: RelayProcess) -> float:
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_held_by_a_burst_of_half_sent_bodies_is_given_back(
    e2e_project: E2EProject, fleet: Fleet
) -> None:
    """500 connections each send a 1 MiB webhook's headers and half its body: the relay grows
    by what the budget and the connections hold, and once they are gone it gives that memory
    back to the system (a full collection, then malloc_trim) instead of keeping its peak."""
    relay = start(fleet, e2e_project)
    ready = rss_mb(relay)
    size = 1024 * 1024
    with sockets(relay.port, 500) as opened:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.sendall(head(relay, b"", length=size) + b" " * (size // 2))
        time.sleep(1.0)
        loaded = rss_mb(relay)
    after = wait_until(
        "the memory given back",
        lambda: (mb := rss_mb(relay)) < ready + (loaded - ready) / 3 and mb,
        timeout_s=10,
    )
    print(
        f"\nRSS: ready {ready:.0f} MB, 500 half-sent bodies {loaded:.0f} MB, after {after:.0f} MB"
    )
    assert loaded > ready + 30  # the burst did take memory
