"""A sink that keeps failing trips its circuit breaker and recovers with its upstream, against
a real `relay serve`; /metrics shows the circuit's state all along.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.fault_rules import FAST_RETRY, event, new_project, rule_for
from tests.e2e.harness import (
    E2EProject,
    Fleet,
    RelayProcess,
    value,
    wait_until,
)
from tests.e2e.upstream import Answer, FakeUpstream

pytestmark = pytest.mark.e2e


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
