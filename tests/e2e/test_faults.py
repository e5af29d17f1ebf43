"""Faulty upstreams against real `relay serve` processes (issue 6): answers slower than the
timeout, connection refused, a connection reset before or in the middle of the answer, a 200
with a malformed body, a 429 storm with Retry-After, a sink down for good; a sink that hangs or
fails never delays a healthy one; a rate-limited sink paces a bulk import.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.fault_rules import FAST_RETRY, NO_BREAKER, event, http_sink, new_project, rule_for
from tests.e2e.harness import (
    SLACK_PATH,
    Fleet,
    free_port,
    make_project,
    user_created,
    value,
    wait_until,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, Drop, FakeUpstream

pytestmark = pytest.mark.e2e


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
    assert "200 OK, but not Resend's answer (no email id)" in attempts["email"][0]["error"]
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
