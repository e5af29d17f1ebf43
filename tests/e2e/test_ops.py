"""Operating a running `relay serve` end to end (issue 4): the delivery-log and replay commands
against its live store, /metrics as Prometheus parses it, hot reload (file change and SIGHUP),
and SIGTERM during a slow attempt.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    RULES,
    SLACK_PATH,
    SOURCE_PATH,
    E2EProject,
    Fleet,
    make_project,
    new_msg_id,
    run_cli,
    scrape,
    signed_headers,
    value,
    wait_until,
    with_env,
    write_rules,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, FakeUpstream

pytestmark = pytest.mark.e2e


@pytest.fixture
def project(tmp_path: Path, upstream: FakeUpstream) -> E2EProject:
    """The harness project (the shipped rules, sinks pointed at ``upstream``)."""
    return make_project(tmp_path / "project", upstream)


def by_sink(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["sink"]: row for row in rows}


# --- the delivery log and replay commands, against a running relay's store ----------------------


def test_log_commands_find_an_event_by_type_and_show_its_attempts_while_serve_runs(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """`relay events --type user.created` (a subprocess, on the store a running `relay serve`
    writes) lists exactly the user.created event; `relay event ID` shows its two deliveries and
    each attempt, the email's 500 and then its 200. The relay keeps serving meanwhile."""
    upstream.script(EMAILS_PATH, [500])
    relay = fleet.start(project)
    user_msg = new_msg_id()
    assert relay.post(project.sample("user.created.json"), msg_id=user_msg).status_code == 200
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    assert relay.post({"type": "session.created", "data": {"id": "sess_1"}}).status_code == 200
    rows = by_sink(project.db.wait_idle())

    listed = run_cli(project, "events", "--type", "user.created")
    as_json = run_cli(project, "events", "--type", "user.created", "--json")
    assert listed.returncode == as_json.returncode == 0, listed.stderr + as_json.stderr
    (found,) = json.loads(as_json.stdout)
    assert (found["type"], found["message_id"]) == ("user.created", user_msg)
    assert found["deliveries"] == {"delivered": 2}
    header, *lines = listed.stdout.splitlines()
    assert header.split()[:4] == ["ID", "TYPE", "SOURCE", "SVIX"]
    assert len(lines) == 1
    assert lines[0].split()[:4] == [found["id"], "user.created", "clerk", user_msg]
    assert lines[0].endswith("2 delivered")

    shown = run_cli(project, "event", found["id"])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    print(f"\n$ relay event {found['id']}\n{text}")
    assert f"svix id:       {user_msg}" in text
    assert "matched rules: signup-alert, welcome-email" in text
    email = rows["email"]
    assert f"delivery {email['id']}" in text
    assert f"idempotency:  {email['idempotency_key']}" in text
    assert email["idempotency_key"] == upstream.requests(EMAILS_PATH)[0].idempotency_key
    blocks = {b.split()[0]: b for b in text.split("\ndelivery ")[1:]}
    attempt_table = {
        dlv: [(r[3], r[4]) for r in (line.split() for line in block.splitlines()) if r[0].isdigit()]
        for dlv, block in blocks.items()
    }
    assert attempt_table == {
        email["id"]: [("500", "failed"), ("200", "delivered")],
        rows["slack-signups"]["id"]: [("200", "delivered")],
    }
    by_svix = json.loads(run_cli(project, "event", user_msg, "--json").stdout)
    log = {
        d["sink"]: [(a["status_code"], a["outcome"]) for a in d["attempt_log"]]
        for d in by_svix["deliveries"]
    }
    assert log == {
        "email": [(500, "failed"), (200, "delivered")],
        "slack-signups": [(200, "delivered")],
    }

    # the commands took no lock the relay needed: it still accepts and delivers
    assert relay.post(project.sample("organizationMembership.deleted.json")).status_code == 200
    upstream.wait_for(MEMBERSHIP_PATH, 2)
    assert len(project.db.wait_idle()) == 4


def test_replay_of_a_dead_delivery_delivers_it_once_with_the_same_key(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """The HTTP sink answers 422: dead after one attempt. The upstream is fixed (200 now);
    `relay replay DLV --yes` (a subprocess) makes it due, and the running relay delivers it
    once, with the Idempotency-Key of the first attempt."""
    upstream.script(MEMBERSHIP_PATH, [422])
    relay = fleet.start(project)
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    (dead,) = project.db.wait_idle()
    assert (dead["status"], dead["attempts"]) == ("dead", 1)

    replayed = run_cli(project, "replay", dead["id"], "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("replayed 1 deliveries")
    first, second = upstream.wait_for(MEMBERSHIP_PATH, 2)
    (row,) = project.db.wait_idle()
    time.sleep(0.5)  # long enough for a second send, had there been one

    # a replay restarts the retry budget (attempts counts this budget's), the log keeps both
    assert (row["id"], row["status"], row["attempts"]) == (dead["id"], "delivered", 1)
    assert first.idempotency_key == second.idempotency_key == row["idempotency_key"]
    assert first.raw == second.raw
    assert [
        (a["number"], a["status_code"], a["outcome"]) for a in project.db.attempts(row["id"])
    ] == [(1, 422, "dead"), (2, 200, "delivered")]
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 2
    print(f"\nreplay: {dead['id']} dead after a 422, replayed, delivered once with the same key")


# --- /metrics -----------------------------------------------------------------------------------


def test_metrics_parse_and_their_counters_move_as_events_flow(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """/metrics parses with prometheus_client's parser; every configured sink and rule has its
    series from the start (at zero); then an accepted, a duplicate and a forged event, a retried
    email, a Retry-After wait and a dead letter move exactly the counters they should: events by
    outcome, deliveries by final outcome, attempts by status class, retries, the latency
    histogram, the queue gauges, and the reload counters and gauges on SIGHUP."""
    upstream.script(EMAILS_PATH, [500])
    upstream.script(MEMBERSHIP_PATH, [(503, {"Retry-After": "5"}), 422])
    relay = fleet.start(project)
    before = scrape(relay.url)
    text = httpx.get(relay.url + "/metrics", timeout=10).text
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert (
        types.items()
        >= {
            "relay_events_received": "counter",
            "relay_deliveries": "counter",
            "relay_delivery_attempts": "counter",
            "relay_delivery_retries": "counter",
            "relay_delivery_latency_seconds": "histogram",
            "relay_sink_circuit_state": "gauge",
            "relay_queue_due": "gauge",
            "relay_queue_pending": "gauge",
            "relay_queue_oldest_due_age_seconds": "gauge",
            "relay_config_last_reload_success": "gauge",
            "relay_config_last_reload_timestamp_seconds": "gauge",
            "relay_config_reloads": "counter",
            "relay_store_commit_seconds": "histogram",
            "relay_store_commit_writes": "histogram",
            "relay_worker_errors": "counter",
        }.items()
    )
    for sink, rule in (
        ("email", "welcome-email"),
        ("slack-signups", "signup-alert"),
        ("membership-sync", "membership-sync"),
    ):
        for outcome in ("delivered", "dead"):
            key = (
                "relay_deliveries_total",
                frozenset({"sink": sink, "rule": rule, "outcome": outcome}.items()),
            )
            assert before[key] == 0
    assert before[("relay_store_commit_seconds_count", frozenset({("kind", "ingest")}))] == 0
    for stage in ("claim", "sweep", "tick", "delivery"):
        assert value(before, "relay_worker_errors_total", stage=stage) == 0
    assert value(before, "relay_config_reloads_total", outcome="success") == 1
    assert value(before, "relay_config_last_reload_success") == 1
    assert abs(value(before, "relay_config_last_reload_timestamp_seconds") - time.time()) < 60

    event = project.sample("user.created.json")
    msg_id = new_msg_id()
    assert relay.post(event, msg_id=msg_id).json()["status"] == "accepted"
    assert relay.post(event, msg_id=msg_id).json()["status"] == "duplicate"
    forged = json.dumps(event).encode()
    assert (
        relay.post(
            forged, headers={**signed_headers(forged), "svix-signature": "v1,AAAA"}
        ).status_code
        == 400
    )
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    waiting = project.db.wait(
        lambda rows: (
            sorted((r["sink"], r["status"]) for r in rows)
            == [
                ("email", "delivered"),
                ("membership-sync", "failed"),
                ("slack-signups", "delivered"),
            ]
        ),
        what="the email delivered, the membership waiting for its Retry-After",
    )
    assert by_sink(waiting)["membership-sync"]["next_attempt_at"] > time.time()
    # the queue gauges are read from the store at most every 2 s (relay.server.ops): poll them
    during = wait_until(
        "the queue gauges showing the delivery waiting for its retry",
        lambda: (m := scrape(relay.url)) and value(m, "relay_queue_pending") == 1 and m,
        timeout_s=4,
    )
    project.db.wait_idle()
    after = wait_until(
        "the queue gauges showing nothing pending",
        lambda: (m := scrape(relay.url)) and value(m, "relay_queue_pending") == 0 and m,
        timeout_s=4,
    )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    events = "relay_events_received_total"
    assert moved(events, source="clerk", type="user.created", outcome="accepted", reason="") == 1
    assert moved(events, source="clerk", type="user.created", outcome="duplicate", reason="") == 1
    assert (
        moved(
            events,
            source="clerk",
            type="organizationMembership.created",
            outcome="accepted",
            reason="",
        )
        == 1
    )
    assert moved(events, source="clerk", type="", outcome="rejected", reason="bad_signature") == 1
    deliveries = "relay_deliveries_total"
    assert moved(deliveries, sink="email", rule="welcome-email", outcome="delivered") == 1
    assert moved(deliveries, sink="slack-signups", rule="signup-alert", outcome="delivered") == 1
    assert moved(deliveries, sink="membership-sync", rule="membership-sync", outcome="dead") == 1
    assert (
        moved(deliveries, sink="membership-sync", rule="membership-sync", outcome="delivered") == 0
    )
    attempts = "relay_delivery_attempts_total"
    assert {
        (sink, cls): moved(attempts, sink=sink, status_class=cls)
        for sink in ("email", "slack-signups", "membership-sync")
        for cls in ("2xx", "4xx", "5xx", "error")
        if moved(attempts, sink=sink, status_class=cls)
    } == {
        ("email", "5xx"): 1,
        ("email", "2xx"): 1,
        ("slack-signups", "2xx"): 1,
        ("membership-sync", "5xx"): 1,
        ("membership-sync", "4xx"): 1,
    }
    assert moved("relay_delivery_retries_total", sink="email") == 1
    assert moved("relay_delivery_retries_total", sink="membership-sync") == 1
    # group commits: the three stored requests one by one (the duplicate commits too, empty),
    # and the five attempt results, some of them together
    commit_s, writes = "relay_store_commit_seconds", "relay_store_commit_writes"
    assert moved(f"{commit_s}_count", kind="ingest") == moved(f"{writes}_count", kind="ingest") == 3
    assert moved(f"{writes}_sum", kind="ingest") == 3
    assert 0 < moved(f"{commit_s}_sum", kind="ingest") < 10
    assert moved(f"{writes}_sum", kind="results") == 5
    assert 1 <= moved(f"{commit_s}_count", kind="results") <= 5
    assert sum(moved("relay_worker_errors_total", stage=s) for s in ("claim", "delivery")) == 0
    latency = "relay_delivery_latency_seconds"
    assert moved(f"{latency}_count", sink="email") == 1
    assert moved(f"{latency}_count", sink="slack-signups") == 1
    assert moved(f"{latency}_count", sink="membership-sync") == 0
    assert value(after, f"{latency}_bucket", sink="email", le="+Inf") == 1
    assert 0.1 < value(after, f"{latency}_sum", sink="email") < 10  # waited out a backoff
    # the queue gauges: one delivery waiting for its retry (not due), then none
    assert value(before, "relay_queue_pending") == 0
    assert value(during, "relay_queue_pending") == 1
    assert value(during, "relay_queue_due") == 0
    assert value(after, "relay_queue_pending") == value(after, "relay_queue_due") == 0
    assert value(after, "relay_queue_oldest_due_age_seconds") == 0

    # a SIGHUP reload moves the reload counter and timestamp
    relay.signal(signal.SIGHUP)
    reloaded = wait_until(
        "the SIGHUP reload counted",
        lambda: (
            (m := scrape(relay.url))
            and value(m, "relay_config_reloads_total", outcome="success") == 2
            and m
        ),
    )
    assert value(reloaded, "relay_config_last_reload_success") == 1
    assert value(reloaded, "relay_config_last_reload_timestamp_seconds") > value(
        before, "relay_config_last_reload_timestamp_seconds"
    )
    assert value(reloaded, "relay_config_reloads_total", outcome="failure") == 0
    counters = (
        "relay_events_received_total",
        "relay_deliveries_total",
        "relay_delivery_attempts_total",
        "relay_delivery_retries_total",
    )
    print(f"\nmetrics: {len(after)} samples parsed; counters that moved:")
    for (name, labels), now in sorted(after.items(), key=str):
        if name in counters and now != before.get((name, labels), 0.0):
            print(f"  {name}{dict(sorted(labels))} +{now - before.get((name, labels), 0.0):.0f}")


# --- hot reload ---------------------------------------------------------------------------------

NEW_RULE = """\

  - name: user-sync
    events: user.created
    send:
      - sink: {sink}
"""


def rules_with_new_rule(upstream: FakeUpstream, sink: str) -> str:
    """The harness's rules.yaml plus a rule sending user.created to the HTTP sink ``sink``."""
    rules = RULES.format(
        source_path=SOURCE_PATH, upstream=upstream.url, membership_first_backoff_s=0.2
    )
    return rules + NEW_RULE.format(sink=sink)


def reloads(relay: Any, outcome: str) -> float:
    return value(relay.metrics(), "relay_config_reloads_total", outcome=outcome)


def test_broken_rules_are_rejected_and_a_fixed_file_is_picked_up_and_sighup_reloads(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """While serve runs: a rules.yaml whose new rule names a sink that does not exist is rejected
    (a located error in the log, reloads_total{outcome="failure"} 1, last_reload_success 0) and
    events keep flowing under the old rules; the fixed file is picked up and its new rule sends
    user.created to the HTTP sink. A SIGHUP reloads a change the file watcher cannot see (same
    size, same mtime)."""
    relay = fleet.start(project)
    assert relay.post(project.sample("user.created.json")).json()["deliveries"] == 2

    write_rules(project, rules_with_new_rule(upstream, "membership-synk"))
    wait_until("the broken file rejected", lambda: reloads(relay, "failure") == 1)
    metrics = relay.metrics()
    assert value(metrics, "relay_config_last_reload_success") == 0
    assert value(metrics, "relay_config_reloads_total", outcome="success") == 1  # the start
    (rejected,) = [line for line in relay.log_lines() if line["msg"].startswith("config reload")]
    assert rejected["msg"] == "config reload rejected; the previous config keeps serving"
    assert rejected["level"] == "error"
    assert rejected["reason"] == "file changed"
    assert any(
        "rules.yaml:" in error and "unknown sink 'membership-synk'" in error
        for error in rejected["errors"]
    ), rejected["errors"]
    # the old rules keep serving
    response = relay.post(project.sample("user.created.json"))
    assert (response.status_code, response.json()["deliveries"]) == (200, 2)

    write_rules(project, rules_with_new_rule(upstream, "membership-sync"))
    wait_until("the fixed file loaded", lambda: reloads(relay, "success") == 2)
    assert value(relay.metrics(), "relay_config_last_reload_success") == 1
    msg_id = new_msg_id()
    response = relay.post(project.sample("user.created.json"), msg_id=msg_id)
    assert response.json()["deliveries"] == 3
    (synced,) = upstream.wait_for(MEMBERSHIP_PATH, 1)
    assert synced.json["type"] == "user.created"  # no template: the event envelope
    rows = project.db.wait_idle()
    assert sorted((r["rule"], r["status"]) for r in rows if r["message_id"] == msg_id) == [
        ("signup-alert", "delivered"),
        ("user-sync", "delivered"),
        ("welcome-email", "delivered"),
    ]
    assert len(upstream.requests(EMAILS_PATH)) == len(upstream.requests(SLACK_PATH)) == 3

    # SIGHUP: rename the rule (same length), put the old mtime back: only the signal sees it
    rules = project.root / "rules.yaml"
    seen = rules.stat()
    write_rules(project, rules.read_text().replace("name: user-sync", "name: user-sink"))
    os.utime(rules, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert (rules.stat().st_size, rules.stat().st_mtime_ns) == (seen.st_size, seen.st_mtime_ns)
    relay.signal(signal.SIGHUP)
    wait_until("the SIGHUP reload", lambda: reloads(relay, "success") == 3)
    (by_signal,) = [line for line in relay.log_lines() if line.get("reason") == "SIGHUP"]
    assert by_signal["msg"] == "config reloaded"
    msg_id = new_msg_id()
    assert relay.post(project.sample("user.created.json"), msg_id=msg_id).status_code == 200
    rows = project.db.wait_idle()
    assert "user-sink" in {r["rule"] for r in rows if r["message_id"] == msg_id}
    assert reloads(relay, "failure") == 1
    print(
        "\nreload: broken file rejected (failure 1), old rules kept serving, fixed file loaded, "
        "new rule delivered, SIGHUP reloaded an invisible change (success 3)"
    )


# --- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_during_a_slow_attempt_leaves_it_due_and_a_restart_delivers_it(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """RELAY_SHUTDOWN_GRACE_S=1; the HTTP sink's upstream takes 30 s to answer the first request.
    SIGTERM while that attempt is in flight: the relay exits within a few seconds, the delivery
    is left pending, unleased and due, with no attempt recorded. A restart with a fast upstream
    delivers it once, with the same Idempotency-Key."""
    project = with_env(project, RELAY_SHUTDOWN_GRACE_S="1")
    upstream.script(MEMBERSHIP_PATH, [Answer(200, delay_s=30)])
    relay = fleet.start(project)
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    (cut,) = upstream.wait_for(MEMBERSHIP_PATH, 1)
    assert upstream.inflight == 1

    took_s = relay.terminate()
    (row,) = project.db.deliveries()
    print(f"\nSIGTERM with an attempt in flight: exited in {took_s:.1f} s (grace 1 s)")
    assert relay.proc is not None
    # uvicorn re-raises SIGTERM once its shutdown is complete: exit 0 or "killed by SIGTERM"
    assert relay.proc.returncode in (0, -signal.SIGTERM)
    assert took_s < 5
    assert "relay stopped" in relay.log()
    assert (row["status"], row["attempts"], row["lease_until"]) == ("pending", 0, None)
    assert row["next_attempt_at"] <= time.time()  # due: the next start sends it at once
    assert project.db.attempts(row["id"]) == []

    restarted_at = time.monotonic()
    fleet.start(project)
    first, second = upstream.wait_for(MEMBERSHIP_PATH, 2)
    (row,) = project.db.wait_idle()
    time.sleep(0.5)  # long enough for a second send, had there been one
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert first is cut
    assert second.at > restarted_at
    assert first.idempotency_key == second.idempotency_key == row["idempotency_key"]
    assert first.raw == second.raw
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 2


# the headers of a webhook of 100 bytes, and its first 9: a sender that then stalls
HALF_A_WEBHOOK = (
    f"POST {SOURCE_PATH} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    'Content-Length: 100\r\n\r\n{"type": '
).encode()


def test_sigterm_with_a_stalled_request_in_flight_exits_within_the_grace(
    project: E2EProject, fleet: Fleet
) -> None:
    """README: on SIGTERM relay lets requests and attempts in flight finish for up to
    RELAY_SHUTDOWN_GRACE_S. A client that sent half a webhook and stalls must not hold a relay
    with a 1 s grace for longer than a few seconds."""
    relay = fleet.start(with_env(project, RELAY_SHUTDOWN_GRACE_S="1"))
    assert relay.proc is not None
    with socket.create_connection(("127.0.0.1", relay.port)) as stalled:
        stalled.sendall(HALF_A_WEBHOOK)
        time.sleep(0.3)
        started = time.monotonic()
        relay.signal(signal.SIGTERM)
        try:
            relay.proc.wait(4)
            outcome = f"exited after {time.monotonic() - started:.1f} s"
        except subprocess.TimeoutExpired:
            relay.proc.kill()  # do not wait out the 10 s here
            relay.proc.wait()
            outcome = "still running after 4 s (SIGKILLed)"
    print(f"\nSIGTERM with a stalled request in flight (grace 1 s): {outcome}")
    assert outcome.startswith("exited")


def test_a_sender_that_stalls_mid_body_gets_a_408_and_the_connection_is_closed(
    project: E2EProject, fleet: Fleet
) -> None:
    """README: a body must arrive within RELAY_BODY_TIMEOUT_S of its headers. A client that sent
    half a webhook and stalls is answered 408 and its connection closed (it holds nothing), the
    event is not stored, and the relay goes on accepting webhooks."""
    relay = fleet.start(with_env(project, RELAY_BODY_TIMEOUT_S="1"))
    with socket.create_connection(("127.0.0.1", relay.port)) as stalled:
        stalled.sendall(HALF_A_WEBHOOK)
        stalled.settimeout(10)
        started = time.monotonic()
        received = b""
        while chunk := stalled.recv(4096):  # until the relay closes the connection
            received += chunk
        waited = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert json.loads(body) == {"status": "rejected", "reason": "body not received within 1 s"}
    assert 0.9 < waited < 5
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    assert len(project.db.events()) == 1


# --- log level ----------------------------------------------------------------------------------


def test_log_level_warning_drops_the_per_event_and_per_attempt_lines(
    project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """RELAY_LOG_LEVEL=warning: an event is stored and delivered as usual, and the relay writes
    none of its info lines (started, event accepted, delivered); a broken rules.yaml, an error,
    is still logged."""
    relay = fleet.start(with_env(project, RELAY_LOG_LEVEL="warning"))
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    upstream.wait_for(MEMBERSHIP_PATH, 1)
    assert [row["status"] for row in project.db.wait_idle()] == ["delivered"]
    write_rules(project, "version: 1\nrules: [")
    relay.signal(signal.SIGHUP)
    lines = wait_until("the reload error logged", lambda: relay.log_lines() or None)
    assert {line["level"] for line in lines} == {"error"}
    assert lines[0]["msg"].startswith("config reload rejected")
