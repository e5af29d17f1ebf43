"""Fault injection against real `relay serve` processes (issue 6, items 3-5).

- Faulty upstreams: answers slower than the timeout, connection refused, a connection reset
  before or in the middle of the answer, a 200 with a malformed body, a 429 storm with
  Retry-After, a sink down for good; a sink that hangs or fails never delays a healthy one; a
  sink that keeps failing trips its circuit breaker and recovers with its upstream.
- Crash safety: a few hundred events from concurrent clients while the relay is SIGKILLed at
  random moments and restarted on the same store; then every acknowledged event's deliveries
  arrived, duplicates only where a kill cut an attempt, nothing half-stored.
- Secrets: every log line, stored error and CLI output of a full run, scanned for every
  configured secret.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.ids import idempotency_key
from tests.conftest import TEST_SECRET
from tests.e2e.harness import (
    EMAILS_PATH,
    MEMBERSHIP_PATH,
    RESEND_API_KEY,
    SLACK_PATH,
    Answer,
    Drop,
    E2EProject,
    FakeUpstream,
    Fleet,
    RelayProcess,
    free_port,
    make_project,
    new_msg_id,
    run_cli,
    signed_headers,
    user_created,
    value,
    wait_until,
    with_env,
    write_rules,
)

pytestmark = pytest.mark.e2e

FAST_RETRY = "{first_backoff_s: 0.2, max_backoff_s: 0.5}"
NO_BREAKER = "{failure_threshold: 1000}"  # isolate the fault under test from the breaker


def new_project(tmp_path: Path, upstream: FakeUpstream, rules: str, **env: str) -> E2EProject:
    project = with_env(make_project(tmp_path / "project", upstream), **env)
    write_rules(project, rules)
    return project


def event(type_: str, n: int = 0) -> dict[str, Any]:
    return {"type": type_, "object": "event", "data": {"id": f"obj_{n:04d}"}}


def http_sink(name: str, url: str, extra: str = "") -> str:
    return (
        f"  {name}:\n    type: http\n    url: {url}\n    retry: {FAST_RETRY}\n"
        f"    circuit: {NO_BREAKER}\n{extra}"
    )


def rule_for(sink: str, events: str | None = None, template: str | None = None) -> str:
    text = f"  - name: to-{sink}\n    events: {events or 'fault.' + sink}\n    send:\n"
    text += f"      - sink: {sink}\n"
    if template:
        text += f'        template: {template}\n        to: "{{{{ primary_email(data) }}}}"\n'
    return text


# --- faulty upstreams ----------------------------------------------------------------------------


def test_each_upstream_fault_is_retried_or_final_as_it_should_be(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """One relay, one sink per fault. Past the timeout, refused, reset before or in the middle of
    the answer, a Resend 200 that is not JSON: retried with the same Idempotency-Key and then
    delivered, each failed attempt recorded with a clear error. An HTTP 2xx with a malformed body
    is delivered (the body is not read for meaning). A 429 storm: every retry waits for its
    Retry-After. A sink that stays down: dead after retry.max_attempts, the reason kept."""
    up = upstream.url
    closed_port = free_port()  # nothing listens here until the test starts a server
    sinks = "".join(
        [
            http_sink("slow", f"{up}/slow", "    timeout_s: 0.5\n"),
            http_sink("refused", f"http://127.0.0.1:{closed_port}/refused"),
            http_sink("reset", f"{up}/reset"),
            http_sink("malformed", f"{up}/malformed"),
            http_sink("storm", f"{up}/storm"),
            http_sink("down", f"{up}/down").replace(
                FAST_RETRY, FAST_RETRY[:-1] + ", max_attempts: 3}"
            ),
            "  email:\n    type: resend\n    api_key: ${RESEND_API_KEY}\n"
            f"    from: Acme <hello@acme.example>\n    base_url: {up}/resend\n"
            f"    retry: {FAST_RETRY}\n    circuit: {NO_BREAKER}\n",
        ]
    )
    rules = "".join(
        rule_for(s) for s in ("slow", "refused", "reset", "malformed", "storm", "down")
    ) + rule_for("email", "user.created", "welcome-email.yaml")
    project = new_project(tmp_path, upstream, f"version: 1\nsinks:\n{sinks}rules:\n{rules}")
    upstream.script("/slow", [Answer(200, delay_s=2.0)])
    upstream.script("/reset", [Drop(), Drop(partial=True)])
    upstream.script("/malformed", [Answer(200, body=b"<html>not json", content_type="text/html")])
    upstream.script(
        "/resend/emails",
        [Answer(200, body=b"<html>gateway hiccup</html>", content_type="text/html")],
    )
    storm = 4
    upstream.script("/storm", [(429, {"Retry-After": "1"})] * (2 * storm))
    upstream.always("/down", 503)
    relay = fleet.start(project)

    started = time.monotonic()
    for sink in ("slow", "refused", "reset", "malformed", "down"):
        assert relay.post(event(f"fault.{sink}")).status_code == 200
    for n in range(storm):
        assert relay.post(event("fault.storm", n)).status_code == 200
    assert relay.post(user_created(project, 1)).status_code == 200

    def by_sink() -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in project.db.deliveries():
            rows.setdefault(row["sink"], []).append(row)
        return rows

    wait_until(
        "two refused attempts", lambda: by_sink()["refused"][0]["attempts"] >= 2, timeout_s=10
    )
    with FakeUpstream(port=closed_port) as late:  # the refusing upstream comes up
        rows = project.db.wait_idle(timeout_s=20)
        assert len(late.requests("/refused")) == 1
    took_s = time.monotonic() - started
    sinks_rows = {r["sink"]: r for r in rows if r["sink"] != "storm"}
    attempts = {s: project.db.attempts(r["id"]) for s, r in sinks_rows.items()}
    summary = {
        s: [(a["status_code"], a["outcome"], (a["error"] or "")[:90]) for a in attempts[s]]
        for s in attempts
    }
    print(f"\nupstream faults: settled in {took_s:.1f} s")
    for sink, seen in summary.items():
        print(f"  {sink}: {seen}")

    # past the timeout: the attempt is cut at 0.5 s and retried with the same key
    assert [a["outcome"] for a in attempts["slow"]] == ["failed", "delivered"]
    assert (
        attempts["slow"][0]["error"]
        == f"post to http://127.0.0.1:{upstream.port}/slow: timed out after 0.5 s"
    )
    # refused: retried until the upstream listens
    refused = attempts["refused"]
    assert refused[-1]["outcome"] == "delivered"
    assert all("connection failed" in (a["error"] or "") for a in refused[:-1])
    # reset before / in the middle of the answer
    assert [a["outcome"] for a in attempts["reset"]] == ["failed", "failed", "delivered"]
    for failed in attempts["reset"][:2]:  # httpx: RemoteProtocolError or ReadError
        assert failed["error"].startswith(f"post to {upstream.url}/reset: ")
        assert failed["error"].endswith(("network error", "closed or reset by the server"))
    # an HTTP sink's 2xx is final, whatever its body
    assert [a["outcome"] for a in attempts["malformed"]] == ["delivered"]
    # a Resend "200" that is not JSON is not proof the email was accepted: retried, same key
    assert [a["outcome"] for a in attempts["email"]] == ["failed", "delivered"]
    assert "200 but the answer is not JSON" in attempts["email"][0]["error"]
    # down for good: dead after max_attempts, with the reason
    assert [a["status_code"] for a in attempts["down"]] == [503, 503, 503]
    assert sinks_rows["down"]["status"] == "dead"
    assert sinks_rows["down"]["last_error"].startswith("gave up after 3 attempts: ")
    assert "503 Service Unavailable" in sinks_rows["down"]["last_error"]
    for sink in ("slow", "refused", "reset", "malformed", "email"):
        assert sinks_rows[sink]["status"] == "delivered", sink
    # every retry carried the delivery's key; each delivered exactly once (one 2xx)
    for sink, path in (("slow", "/slow"), ("reset", "/reset"), ("email", "/resend/emails")):
        keys = upstream.by_key(path)
        assert list(keys) == [sinks_rows[sink]["idempotency_key"]], sink
        assert len(keys[sinks_rows[sink]["idempotency_key"]]) == len(attempts[sink])
    # the 429 storm: every retry of a delivery came at least Retry-After (1 s) after its 429
    storm_rows = [r for r in rows if r["sink"] == "storm"]
    # (a 429 also pauses the whole sink, so the retries need not go in rounds of four)
    assert {r["status"] for r in storm_rows} == {"delivered"}
    assert sum(r["attempts"] for r in storm_rows) == 3 * storm  # the 8 429s and 4 successes
    gaps = [
        later.at - earlier.at
        for tries in upstream.by_key("/storm").values()
        for earlier, later in itertools.pairwise(tries)
    ]
    assert len(gaps) == 2 * storm
    assert min(gaps) >= 0.95, gaps
    print(f"  storm: {storm} deliveries x 2 x 429; retry gaps {min(gaps):.2f}..{max(gaps):.2f} s")


def test_healthy_sink_keeps_its_latency_while_others_hang_and_fail(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """Every user.created goes to three sinks: one whose upstream hangs past the timeout, one
    whose upstream answers 503, and Slack, which is healthy. Slack's posts all arrive within a
    second of each event's acknowledgement while the other two pile up retries."""
    up = upstream.url
    sinks = (
        http_sink("stuck", f"{up}/stuck", "    timeout_s: 5\n    concurrency: 2\n")
        + http_sink("failing", f"{up}/failing")
        + "  slack-signups:\n    type: slack\n    webhook_url: ${SLACK_WEBHOOK_URL}\n"
    )
    rules = (
        rule_for("stuck", "user.created")
        + rule_for("failing", "user.created")
        + "  - name: signup-alert\n    events: user.created\n    send:\n"
        "      - sink: slack-signups\n        template: signup-alert.yaml\n"
    )
    project = new_project(tmp_path, upstream, f"version: 1\nsinks:\n{sinks}rules:\n{rules}")
    upstream.always("/stuck", Answer(200, delay_s=60))
    upstream.always("/failing", 503)
    relay = fleet.start(project)

    count = 20
    acked: dict[str, float] = {}
    for n in range(count):
        response = relay.post(user_created(project, n))
        assert response.status_code == 200
        acked[f"User{n}"] = time.monotonic()
        time.sleep(0.1)
    posts = upstream.wait_for(SLACK_PATH, count, timeout_s=10)
    metrics = relay.metrics()

    latency = sorted(p.at - acked[p.json["text"].split()[2]] for p in posts)
    stuck, failing = upstream.requests("/stuck"), upstream.requests("/failing")
    print(
        f"\nhead-of-line: {count} Slack posts, latency after the 200: median "
        f"{latency[count // 2] * 1000:.0f} ms, max {latency[-1] * 1000:.0f} ms; meanwhile "
        f"{len(stuck)} hung attempts and {len(failing)} 503s; queue due "
        f"{value(metrics, 'relay_queue_due'):.0f}"
    )
    assert len(posts) == count
    assert latency[-1] < 1.0, latency
    # the other sinks really were in trouble at the same time
    assert 2 <= len(stuck) <= 4  # both slots hang (5 s timeout); the other 18 wait their turn
    assert len(failing) >= count
    assert value(metrics, "relay_queue_due") >= 10
    assert value(metrics, "relay_delivery_attempts_total", sink="failing", status_class="5xx") >= 20
    assert (
        value(metrics, "relay_delivery_latency_seconds_bucket", sink="slack-signups", le="1.0")
        == count
    )
    assert (
        value(
            metrics,
            "relay_deliveries_total",
            sink="slack-signups",
            rule="signup-alert",
            outcome="delivered",
        )
        == count
    )


def breaker_project(tmp_path: Path, upstream: FakeUpstream, circuit: str) -> E2EProject:
    sinks = (
        f"  flaky:\n    type: http\n    url: {upstream.url}/flaky\n    concurrency: 2\n"
        f"    retry: {FAST_RETRY}\n    circuit: {circuit}\n"
    )
    rules = f"version: 1\nsinks:\n{sinks}rules:\n{rule_for('flaky')}"
    return new_project(tmp_path, upstream, rules)


def circuit_lines(relay: RelayProcess, msg: str) -> list[dict[str, Any]]:
    return [line for line in relay.log_lines() if line["msg"] == msg]


def test_circuit_breaker_opens_on_a_failing_sink_and_recovers_with_it(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """A sink whose upstream answers 503 to everything, with failure_threshold 3 and cooldown 2 s:
    after 3 failures the circuit opens (gauge 1, a "circuit open" log line), its deliveries wait
    due without spending attempts, one probe goes out per cooldown (which doubles). When the
    upstream recovers, the next probe closes the circuit and the whole backlog is delivered."""
    project = breaker_project(tmp_path, upstream, "{failure_threshold: 3, cooldown_s: 2}")
    upstream.always("/flaky", 503)
    relay = fleet.start(project)

    backlog = 6
    for n in range(backlog):
        assert relay.post(event("fault.flaky", n)).status_code == 200
    (opened,) = wait_until("a circuit open log line", lambda: circuit_lines(relay, "circuit open"))
    before_probe = upstream.requests("/flaky")
    metrics = relay.metrics()
    assert value(metrics, "relay_sink_circuit_state", sink="flaky") == 1
    assert value(metrics, "relay_queue_due") >= 1  # held back: due, not attempted
    # the probe after the cooldown fails: the circuit opens again for twice as long
    reopened = wait_until(
        "the failed probe reopening the circuit",
        lambda: (found := circuit_lines(relay, "circuit open")) and len(found) == 2 and found,
    )
    time.sleep(1.0)  # well inside the 4 s cooldown: nothing more may go out
    window = upstream.requests("/flaky")
    rows = project.db.deliveries()
    metrics = relay.metrics()
    span_s = window[-1].at - window[0].at + 1.0
    print(
        f"\ncircuit breaker: {len(window)} attempts in {span_s:.1f} s for {backlog} deliveries "
        f"({len(before_probe)} before the circuit opened, then 1 probe; without a breaker, "
        f"about {backlog * span_s / 0.35:.0f}); state "
        f"{value(metrics, 'relay_sink_circuit_state', sink='flaky'):.0f}, queue due "
        f"{value(metrics, 'relay_queue_due'):.0f}"
    )
    assert opened["sink"] == "flaky"
    assert opened["level"] == "warning"
    assert opened["from"] == "closed"
    assert opened["consecutive_failures"] >= 3
    assert opened["cooldown_s"] == 2.0
    assert [line["cooldown_s"] for line in reopened] == [2.0, 4.0]
    # threshold + what was already in flight (concurrency 2), then exactly one probe
    assert 3 <= len(before_probe) <= 3 + 1
    assert len(window) == len(before_probe) + 1
    assert window[-1].at - before_probe[-1].at >= 1.9  # the probe waited out the cooldown
    assert sum(r["attempts"] for r in rows) == len(window)  # no attempt spent while open
    assert value(metrics, "relay_sink_circuit_state", sink="flaky") == 1
    assert value(metrics, "relay_delivery_attempts_total", sink="flaky", status_class="5xx") == len(
        window
    )

    upstream.always("/flaky", None)  # the upstream recovers
    recovered_at = time.monotonic()
    rows = project.db.wait_idle(timeout_s=10)
    closed_after = time.monotonic() - recovered_at
    metrics = relay.metrics()
    after = [r for r in upstream.requests("/flaky") if r.at >= recovered_at]
    print(
        f"circuit breaker: upstream back; circuit closed and {backlog} delivered "
        f"{closed_after:.1f} s later, {len(after)} attempts after recovery"
    )
    assert {r["status"] for r in rows} == {"delivered"}
    (closed,) = circuit_lines(relay, "circuit closed")
    assert closed["sink"] == "flaky"
    assert value(metrics, "relay_sink_circuit_state", sink="flaky") == 0
    # after the recovery, each delivery went out exactly once, with its own key
    assert sorted(r.idempotency_key or "" for r in after) == sorted(
        r["idempotency_key"] for r in rows
    )
    assert (
        value(metrics, "relay_deliveries_total", sink="flaky", rule="to-flaky", outcome="delivered")
        == backlog
    )


def test_a_rate_limited_sink_paces_a_bulk_import(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """A bulk import (20 user.created at once) to an email sink with rate_limit_per_s: 5: the
    first 5 go at once (a second's worth), the rest at about 5 a second, so the 20th reaches
    Resend about 3 s after the first (without pacing, all 20 arrive within a fraction of a
    second); no second holds more than 10; all are delivered."""
    sink = (
        "  email:\n    type: resend\n    api_key: ${RESEND_API_KEY}\n"
        f"    from: Acme <hello@acme.example>\n    base_url: {upstream.url}/resend\n"
        "    concurrency: 8\n    rate_limit_per_s: 5\n"
    )
    rules = rule_for("email", "user.created", "welcome-email.yaml")
    project = new_project(tmp_path, upstream, f"version: 1\nsinks:\n{sink}rules:\n{rules}")
    relay = fleet.start(project)
    for n in range(20):
        assert relay.post(user_created(project, n)).status_code == 200
    arrived = [r.at for r in upstream.wait_for("/resend/emails", 20, timeout_s=20)]
    rows = project.db.wait_idle(timeout_s=20)
    spread = arrived[-1] - arrived[0]
    print(f"\nbulk import paced at 5/s: 20 emails over {spread:.1f} s")
    assert {r["status"] for r in rows} == {"delivered"}
    assert len(rows) == 20
    assert spread >= 2.5  # (20 - 5) / 5 = 3 s, less slack for the first request's latency
    assert max(sum(1 for t in arrived if first <= t < first + 1.0) for first in arrived) <= 10


def test_circuit_gauge_reads_half_open_while_the_probe_is_in_flight(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """The gauge's help says 0 closed, 1 open, 2 half-open: while the one probe is in flight the
    circuit is half-open, and /metrics must say so."""
    project = breaker_project(tmp_path, upstream, "{failure_threshold: 1, cooldown_s: 0.5}")
    upstream.script("/flaky", [503, Answer(200, delay_s=2)])
    relay = fleet.start(project)
    assert relay.post(event("fault.flaky")).status_code == 200
    upstream.wait_for("/flaky", 2)  # the probe, answered in 2 s
    state = value(relay.metrics(), "relay_sink_circuit_state", sink="flaky")
    print(f"\ncircuit gauge while the probe is in flight: {state:.0f}")
    assert state == 2


def test_resend_200_that_is_not_json_is_recorded_as_the_200_it_was(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """A proxy answers Resend's 200 with an HTML page: retrying (same key) is right, but the
    attempt must record what the upstream said (200, not JSON), not a 500 it never sent."""
    project = make_project(tmp_path / "project", upstream)
    upstream.script(EMAILS_PATH, [Answer(200, body=b"<html>hi</html>", content_type="text/html")])
    relay = fleet.start(project)
    assert relay.post(user_created(project, 1)).status_code == 200
    rows = project.db.wait_idle()
    (email,) = [r for r in rows if r["sink"] == "email"]
    failed, delivered = project.db.attempts(email["id"])
    print(f"\nResend 200 with an HTML body, as stored: {failed}")
    assert (failed["outcome"], delivered["outcome"]) == ("failed", "delivered")
    assert failed["status_code"] == 200
    assert "500" not in failed["error"]


# --- crash safety under load ---------------------------------------------------------------------

CRASH_SEED = int(os.environ.get("E2E_CRASH_SEED", "20240611"))  # another seed: other moments
CRASH_EVENTS = 300
CRASH_CLIENTS = 4
CRASH_DEADLINE_S = 90.0
EXPECTED_SENDS = {  # (rule, sink) per event type, as the harness's rules.yaml routes them
    "user.created": [("welcome-email", "email"), ("signup-alert", "slack-signups")],
    "organizationMembership.created": [("membership-sync", "membership-sync")],
    "session.created": [],
}


def crash_events(project: E2EProject) -> list[tuple[str, bytes]]:
    """(svix-id, body): 6 in 10 user.created (email + Slack), 3 in 10 memberships (HTTP sink),
    1 in 10 session.created (no rule: stored without deliveries). Every body is distinct."""
    membership = project.sample("organizationMembership.created.json")
    events = []
    for i in range(CRASH_EVENTS):
        if i % 10 < 6:
            body = user_created(project, i)
        elif i % 10 < 9:
            body = copy.deepcopy(membership)
            body["data"]["id"] = f"orgmem_e2e_{i:04d}"
        else:
            body = event("session.created", i)
        events.append((f"msg_crash_{i:04d}_{new_msg_id()[4:14]}", json.dumps(body).encode()))
    return events


def test_sigkill_at_random_moments_loses_no_acknowledged_event(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """300 events from 4 concurrent clients (each retrying an unacknowledged event with the same
    svix-id, as Svix does) while the relay is SIGKILLed 3-5 times at random moments (seeded),
    during ingest and during delivery, and restarted on the same store and port each time.
    Afterwards every acknowledged event is stored once with all its deliveries, every delivery
    is delivered and arrived upstream; a delivery arrived twice only if a kill cut its attempt
    (same Idempotency-Key, same body); no stored event lacks its deliveries."""
    rng = random.Random(CRASH_SEED)
    project = make_project(tmp_path / "project", upstream)
    for path in (EMAILS_PATH, SLACK_PATH, MEMBERSHIP_PATH):
        upstream.always(path, Answer(200, delay_s=0.1))  # attempts are in flight when it dies
    events = crash_events(project)
    types = {msg: json.loads(body)["type"] for msg, body in events}
    port = free_port()
    fleet.start(project, port=port)
    url = fleet.relays[0].webhook_url

    lock = threading.Lock()
    acked: dict[str, str] = {}  # svix-id -> accepted | duplicate
    unacked_tries = Counter[str]()  # connection errors and 5xx, per svix-id
    failures: list[str] = []
    todo = iter(events)
    deadline = time.monotonic() + CRASH_DEADLINE_S
    ingest_done = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=httpx.Timeout(10, connect=1)) as http:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                msg_id, body = item
                while time.monotonic() < deadline:
                    try:  # a retry is signed again, with the same svix-id
                        answer = http.post(url, content=body, headers=signed_headers(body, msg_id))
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code == 200:
                        with lock:
                            acked[msg_id] = answer.json()["status"]
                        break
                    if answer is not None and answer.status_code < 500:
                        failures.append(f"{msg_id}: {answer.status_code} {answer.text}")
                        break
                    with lock:
                        unacked_tries[msg_id] += 1
                    time.sleep(0.05)

    kills: list[dict[str, Any]] = []
    kill_plan = rng.randint(3, 5)
    ingest_kills = sorted(rng.sample(range(20, CRASH_EVENTS - 40), kill_plan - 1))

    def pending() -> int:
        sql = "SELECT COUNT(*) AS n FROM deliveries WHERE status IN ('pending', 'failed')"
        count: int = project.db.query(sql)[0]["n"]
        return count

    def kill_now(phase: str) -> None:
        relay = fleet.relays[-1]
        inflight, waiting = upstream.inflight, pending()
        relay.kill()
        kills.append(
            {
                "phase": phase,
                "at": time.monotonic(),
                "acked": len(acked),
                "inflight": inflight,
                "pending": waiting,
            }
        )
        fleet.start(project, port=port)  # the same store, the same URL

    def killer() -> None:
        try:
            for threshold in ingest_kills:  # at a random count of acknowledged events
                while len(acked) < threshold and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.05))
                kill_now("ingest" if not ingest_done.is_set() else "delivery")
            ingest_done.wait(CRASH_DEADLINE_S)
            time.sleep(rng.uniform(0, 0.2))
            # during delivery: while attempts are in flight upstream (if any are left to make)
            give_up = time.monotonic() + 10
            while upstream.inflight == 0 and time.monotonic() < give_up and pending():
                time.sleep(0.002)
            kill_now("delivery")
        except Exception as exc:
            failures.append(f"killer: {exc!r}")

    started = time.monotonic()
    clients = [threading.Thread(target=client) for _ in range(CRASH_CLIENTS)]
    chaos = threading.Thread(target=killer)
    for thread in [*clients, chaos]:
        thread.start()
    for thread in clients:
        thread.join(CRASH_DEADLINE_S + 10)
    ingest_done.set()
    ingest_s = time.monotonic() - started
    chaos.join(CRASH_DEADLINE_S + 30)
    assert not chaos.is_alive()
    assert failures == []
    rows = project.db.wait_idle(timeout_s=60)
    total_s = time.monotonic() - started

    # every event was acknowledged (a kill only delays the 200 until the retry after a restart)
    assert sorted(acked) == sorted(msg for msg, _ in events)
    # -- the store: each event once, with exactly its deliveries; nothing half-stored
    stored = project.db.events()
    assert len(stored) == len({e["message_id"] for e in stored}) == CRASH_EVENTS
    expected: dict[str, tuple[str, str, str]] = {}  # idempotency key -> (svix-id, rule, sink)
    for msg_id, type_ in types.items():
        for rule, sink in EXPECTED_SENDS[type_]:
            expected[idempotency_key("clerk", msg_id, rule, 0)] = (msg_id, rule, sink)
    assert sorted((r["idempotency_key"], r["message_id"], r["rule"], r["sink"]) for r in rows) == (
        sorted((key, *value) for key, value in expected.items())
    )
    orphans = project.db.query(
        "SELECT e.message_id FROM events e WHERE e.type IN"
        " ('user.created', 'organizationMembership.created')"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)"
    )
    assert orphans == []
    assert {r["status"] for r in rows} == {"delivered"}
    outcomes = project.db.query("SELECT outcome, COUNT(*) AS n FROM attempts GROUP BY outcome")
    assert outcomes == [{"outcome": "delivered", "n": len(rows)}]  # one recorded attempt each

    # -- the upstream: every delivery arrived; duplicates only where a kill cut the attempt
    arrived: dict[str, list[Any]] = {}
    slack_key = {  # Slack webhooks carry no idempotency key: the text names the user
        f"User{int(msg.split('_')[2])}": key
        for key, (msg, _, sink) in expected.items()
        if sink == "slack-signups"
    }
    for path in (EMAILS_PATH, MEMBERSHIP_PATH):
        for key, found in upstream.by_key(path).items():
            arrived.setdefault(key or "", []).extend(found)
    for post in upstream.requests(SLACK_PATH):
        arrived.setdefault(slack_key[post.json["text"].split()[2]], []).append(post)
    assert sorted(arrived) == sorted(expected)
    kill_times = [k["at"] for k in kills]
    duplicates = Counter[str]()  # per sink: sends of a delivery after its first
    unexplained = 0
    for key, found in arrived.items():
        assert len({r.raw for r in found}) == 1, f"{key}: the same delivery, different bodies"
        for earlier, later in itertools.pairwise(found):
            duplicates[expected[key][2]] += 1
            if not any(earlier.at <= t + 0.2 and later.at >= t for t in kill_times):
                unexplained += 1
    phases = Counter(k["phase"] for k in kills)
    print(
        f"\ncrash safety (seed {CRASH_SEED}): {CRASH_EVENTS} events posted by {CRASH_CLIENTS} "
        f"clients, {len(acked)} acknowledged ({Counter(acked.values())['accepted']} accepted, "
        f"{Counter(acked.values())['duplicate']} answered duplicate on a retry after a kill), "
        f"{sum(unacked_tries.values())} unacknowledged tries retried; "
        f"{len(kills)} crashes injected (SIGKILL: {phases['ingest']} during ingest, "
        f"{phases['delivery']} during delivery; {sum(k['inflight'] for k in kills)} attempts in "
        f"flight upstream when killed, {upstream.truncated} requests cut mid-body); deliveries "
        f"expected {len(expected)}, delivered "
        f"{len(rows)} (store) and {len(arrived)} distinct at the upstream; duplicate sends "
        f"{duplicates.total()} {dict(duplicates)} (all of them cut by a kill: {unexplained == 0}"
        f"; email and HTTP ones carry the first send's Idempotency-Key, Slack's cannot); "
        f"ingest {ingest_s:.1f} s, "
        f"all delivered after {total_s:.1f} s"
    )
    for k in kills:
        print(f"  kill: {k}")
    assert 3 <= len(kills) <= 5
    assert phases["ingest"] >= 1
    assert any(k["phase"] == "delivery" and k["inflight"] > 0 for k in kills)
    assert unexplained == 0


# --- secrets -------------------------------------------------------------------------------------

SYNC_API_TOKEN = "sync_tok_e2e_7d1e0b44c2"
SYNC_SIGNING_SECRET = "whsec_c3luYy1zaWduaW5nLWtleS1lMmUtMDEyMzQ1Njc4OQ=="
QUERY_TOKEN = "e2e-query-token-5f3a9c"
SLACK_TOKEN = SLACK_PATH.rsplit("/", 1)[1]

SECRET_RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
    base_url: {upstream}
    retry: {retry}
  slack-signups:
    type: slack
    webhook_url: ${{SLACK_WEBHOOK_URL}}
    retry: {retry}
  membership-sync:
    type: http
    url: ${{MEMBERSHIP_SYNC_URL}}
    headers:
      Authorization: Bearer ${{SYNC_API_TOKEN}}
    signing_secret: ${{SYNC_SIGNING_SECRET}}
    timeout_s: 1
    retry: {retry}
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
    events: organizationMembership.*
    send:
      - sink: membership-sync
        template: membership-sync.yaml
"""

# The same file with each secret variable in a field where it is wrong: a reload (and `relay
# check`, and a `relay serve` start) must report these without quoting the values.
BROKEN_SECRET_RULES = (
    SECRET_RULES.replace("secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}", "secret: ${{RESEND_API_KEY}}")
    .replace("webhook_url: ${{SLACK_WEBHOOK_URL}}", "webhook_url: ${{SYNC_API_TOKEN}}")
    .replace("url: ${{MEMBERSHIP_SYNC_URL}}", "url: ${{SYNC_SIGNING_SECRET}}")
    .replace("timeout_s: 1", "timeout_s: ${{SLACK_WEBHOOK_URL}}")
)


def json_answer(status: int, **body: Any) -> Answer:
    return Answer(status, body=json.dumps(body).encode())


def secrets_of(project: E2EProject) -> dict[str, str]:
    """Every configured secret, and the token inside each one that embeds a token."""
    env = project.env()
    return {
        "Svix signing secret": TEST_SECRET,
        "Svix signing key": TEST_SECRET.removeprefix("whsec_"),
        "Resend API key": RESEND_API_KEY,
        "Slack webhook URL": env["SLACK_WEBHOOK_URL"],
        "Slack webhook token": SLACK_TOKEN,
        "HTTP sink URL query token": QUERY_TOKEN,
        "HTTP sink Authorization token": SYNC_API_TOKEN,
        "HTTP sink signing secret": SYNC_SIGNING_SECRET,
        "HTTP sink signing key": SYNC_SIGNING_SECRET.removeprefix("whsec_"),
    }


def store_text(project: E2EProject) -> dict[str, str]:
    """Every table of the store as text, row by row (bytes decoded)."""
    tables = project.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    found = {}
    for table in (t["name"] for t in tables):
        rows = project.db.query(f"SELECT * FROM {table}")  # noqa: S608  (names from the schema)
        found[f"store:{table}"] = "\n".join(
            " ".join(
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in row.values()
            )
            for row in rows
        )
    return found


def hits(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{name} in {where}: ...{text[max(0, i - 60) : i + len(secret) + 20]!r}..."
        for where, text in texts.items()
        for name, secret in secrets.items()
        if (i := text.find(secret)) >= 0
    ]


def secret_project(tmp_path: Path, upstream: FakeUpstream) -> E2EProject:
    base = make_project(tmp_path / "project", upstream)
    project = with_env(
        base,
        MEMBERSHIP_SYNC_URL=f"{upstream.url}{MEMBERSHIP_PATH}?token={QUERY_TOKEN}",
        SYNC_API_TOKEN=SYNC_API_TOKEN,
        SYNC_SIGNING_SECRET=SYNC_SIGNING_SECRET,
    )
    write_rules(project, SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    return project


def test_full_run_leaks_no_configured_secret(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """A full run with a secret in every place one can be (signing secrets, an API key, a Slack
    webhook URL, an HTTP sink URL with a token in its query, an Authorization header): upstream
    errors that quote the secret back (Resend quoting the key, Slack quoting the webhook URL, the
    HTTP target quoting its Authorization header and URL), a dropped connection, a timeout,
    dead letters, a forged signature, a rejected reload with every secret variable in a wrong
    field, a SIGHUP reload, `relay serve` refusing that broken file, `relay check`, `preview`,
    `events`, `event --json --body`, `deliveries --json`, `replay`, and a SIGTERM. Every log line,
    every stored row (attempt errors, last errors, events) and every CLI output is scanned for
    every configured secret: none may appear."""
    project = secret_project(tmp_path, upstream)
    secrets = secrets_of(project)
    slack_url = project.env()["SLACK_WEBHOOK_URL"]
    sync_url = project.env()["MEMBERSHIP_SYNC_URL"]
    key_quoted = f"API key {RESEND_API_KEY} is suspended"
    bearer_quoted = f"Authorization: Bearer {RESEND_API_KEY} may not send"
    upstream.script(
        EMAILS_PATH,
        [
            json_answer(500, statusCode=500, name="application_error", message=key_quoted),
            json_answer(422, statusCode=422, name="validation_error", message=bearer_quoted),
        ],
    )
    slack_quoted = f"upstream error posting to {slack_url}".encode()
    upstream.script(
        SLACK_PATH, [Answer(500, body=slack_quoted, content_type="text/plain"), Drop(partial=True)]
    )
    sync_quoted = f"cannot reach {sync_url} (Authorization: Bearer {SYNC_API_TOKEN})".encode()
    upstream.script(
        MEMBERSHIP_PATH,
        [
            json_answer(401, error="no", authorization=f"Bearer {SYNC_API_TOKEN}", url=sync_url),
            Answer(200, delay_s=3),  # past the 1 s timeout
            Answer(503, body=sync_quoted, content_type="text/plain"),
        ],
    )
    relay = fleet.start(project)
    cli: dict[str, str] = {}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(project, *args, database=args[0] not in ("check", "preview", "serve"))
        cli[f"cli:relay {' '.join(args)}"] = done.stdout + done.stderr
        return done

    for n in range(3):
        assert relay.post(user_created(project, n)).status_code == 200
    for name in ("organizationMembership.created.json", "organizationMembership.deleted.json"):
        assert relay.post(project.sample(name)).status_code == 200
    forged = json.dumps(event("user.created")).encode()
    headers = signed_headers(forged, secret="whsec_plJ3nmyCDGBKInavdOK15jsl")
    assert relay.post(forged, headers=headers).status_code == 400
    rows = project.db.wait_idle(timeout_s=20)
    assert {r["status"] for r in rows} == {"delivered", "dead"}

    # a broken reload, then the good file again and a SIGHUP
    write_rules(project, BROKEN_SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    wait_until(
        "the reload rejected",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="failure") == 1,
    )
    write_rules(project, SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY))
    wait_until(
        "the good file reloaded",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="success") == 2,
    )
    relay.signal(signal.SIGHUP)
    wait_until(
        "the SIGHUP reload",
        lambda: value(relay.metrics(), "relay_config_reloads_total", outcome="success") == 3,
    )

    # the operator's commands, while serve runs (the read-only ones side by side)
    (project.root / "broken.yaml").write_text(
        BROKEN_SECRET_RULES.format(upstream=upstream.url, retry=FAST_RETRY)
    )
    serve_broken = ("serve", "--rules", "broken.yaml", "--port", str(free_port()))
    dead = project.db.query(
        "SELECT e.id FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.status = 'dead'"
    )
    commands = [
        ("check",),
        ("check", "--rules", "broken.yaml"),
        serve_broken,
        ("preview", "samples/organizationMembership.created.json"),
        ("events",),
        ("deliveries", "--json"),
        ("deliveries", "--status", "dead"),
        ("event", dead[0]["id"], "--json", "--body"),
        ("event", dead[-1]["id"]),
    ]
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(commands, pool.map(lambda args: run(*args), commands), strict=True))
    assert {args: d.returncode for args, d in done.items()} == {
        args: 1 if "broken.yaml" in args else 0 for args in commands
    }
    assert "relay: not starting" in done[serve_broken].stderr
    assert run("replay", "--dead", "--yes").returncode == 0
    project.db.wait(lambda rows: {r["status"] for r in rows} == {"delivered"}, 20, "replayed")
    relay.terminate()

    texts = {f"log:{r.log_path.name}": r.log() for r in fleet.relays if r.log_path}
    texts |= store_text(project) | cli
    found = hits(texts, secrets)
    log_lines = sum(t.count("\n") for k, t in texts.items() if k.startswith("log:"))
    attempts = project.db.query("SELECT COUNT(*) AS n, COUNT(error) AS errors FROM attempts")[0]
    print(
        f"\nsecrets scan: {len(secrets)} secrets x {log_lines} log lines, {attempts['n']} stored "
        f"attempts ({attempts['errors']} with an error), {len(rows)} deliveries, {len(cli)} CLI "
        f"outputs: secrets found: {len(found)}"
    )
    for hit in found:
        print(f"  {hit}")
    assert found == []
    # and the run did produce the errors that quoted the secrets back (redacted)
    errors = " ".join(a["error"] or "" for a in project.db.query("SELECT error FROM attempts"))
    assert errors.count("[redacted]") >= 4
    assert "config reload rejected" in relay.log()


def test_an_upstream_quoting_part_of_a_secret_leaks_nothing(
    tmp_path: Path, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """Upstream errors that quote back only the meaningful part of a secret, as real ones do:
    a proxy's 404 page naming the Slack webhook path, an API's 401 naming the token it got (from
    the Authorization header, and from the URL's query). None of it may reach the store or logs."""
    project = secret_project(tmp_path, upstream)
    secrets = secrets_of(project)
    upstream.script(
        SLACK_PATH,
        [Answer(404, body=f"Cannot POST {SLACK_PATH}".encode(), content_type="text/html")],
    )
    upstream.script(
        MEMBERSHIP_PATH,
        [
            json_answer(401, error=f"token {SYNC_API_TOKEN} is revoked"),
            json_answer(401, error=f"unknown token {QUERY_TOKEN}"),
        ],
    )
    relay = fleet.start(project)
    assert relay.post(user_created(project, 1)).status_code == 200
    for name in ("organizationMembership.created.json", "organizationMembership.deleted.json"):
        assert relay.post(project.sample(name)).status_code == 200
    rows = project.db.wait_idle(timeout_s=15)
    assert sorted(r["status"] for r in rows) == ["dead", "dead", "dead", "delivered"]

    texts = {"log": relay.log()} | store_text(project)
    found = hits(texts, secrets)
    print(f"\nsecrets quoted in part by an upstream: secrets found: {len(found)}")
    for hit in found:
        print(f"  {hit}")
    assert found == []
