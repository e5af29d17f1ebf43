"""Several `relay serve` replicas on one PostgreSQL database, one of them SIGKILLed mid-run.

What holds across replicas (issue 7): every acknowledged event is stored once, whichever replica
(or replicas) it was posted to; each of its deliveries is claimed by one replica at a time
(``FOR UPDATE SKIP LOCKED``) and ends delivered exactly once in the store; a replica that dies
leaves leases that expire, after which a survivor sends what the dead one had claimed, with the
same idempotency key. The only repeated upstream requests are attempts the kill cut short.

The database is a fresh schema of the test database (RELAY_TEST_POSTGRES_URL, default the local
server's ``test``), created with ``relay db upgrade`` and dropped afterwards. Without a reachable
server the tests skip, except under CI=true, where that is a failure.

A SIGKILLed replica's claims come back only when their lease ends: the sink's ``timeout_s`` plus
``RELAY_LEASE_MARGIN_S`` (60 s by default; 20 s here: long enough to outlast the burst, so the
kill test can see the stranded claims, and short enough not to wait a minute).

A rolling deploy that adds a rule: a replica still on the old rules.yaml leaves the new rule's
deliveries to a replica that knows the rule instead of dead-lettering them.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from relay.ids import idempotency_key
from relay.sinks.base import SinkSettings
from relay.store import redact_url
from relay.store.postgres import SCHEMA_VERSION
from tests.e2e.harness import (
    SOURCE_PATH,
    E2EProject,
    RelayProcess,
    make_project,
    signed_headers,
    user_created,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, Drop, FakeUpstream, Recorded

pytestmark = pytest.mark.e2e

AUDIT_PATH = "/audit"
SINK_TIMEOUT_S = 2.0
LEASE_MARGIN_S = 20.0  # RELAY_LEASE_MARGIN_S: outlasts the burst, so the kill strands claims
LEASE_S = SINK_TIMEOUT_S + LEASE_MARGIN_S  # how long a dead replica's claim stays leased
UPSTREAM_DELAY_S = 0.5  # every upstream answer: attempts stay in flight, so the kill cuts some
EVENTS = 150
CLIENTS = 10  # concurrent webhook senders
POST_EVERY_S = 0.02  # the burst: one new post every 20 ms, ~3 s in all
QUIET_S = 2.0  # no new upstream request for this long: the survivors have nothing left to do
RULES = """\
# Two sends per user.created, both with an Idempotency-Key header; 2 s timeouts, short backoffs.
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
    timeout_s: {timeout_s}
    retry: {{first_backoff_s: 0.2, max_backoff_s: 1}}

  audit:
    type: http
    url: {upstream}{audit_path}
    timeout_s: {timeout_s}
    retry: {{first_backoff_s: 0.2, max_backoff_s: 1}}

rules:
  - name: welcome-email
    events: user.created
    when: primary_email(data)
    send:
      - sink: email
        template: welcome-email.yaml
        to: "{{{{ primary_email(data) }}}}"

  - name: audit
    events: user.created
    send:
      - sink: audit
"""
SENDS = (("welcome-email", 0), ("audit", 0))  # (rule, send index) of each user.created
CONCURRENCY = SinkSettings.model_fields["concurrency"].default  # per sink and replica (4)


# --- PostgreSQL ----------------------------------------------------------------------------------


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of one read-only statement, on a connection of its own."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5, row_factory=dict_row) as conn:
        return conn.execute(statement, params).fetchall()


def stored_events(url: str) -> list[dict[str, Any]]:
    return query(url, "SELECT id, message_id, type FROM events ORDER BY received_at, id")


def stored_deliveries(url: str) -> list[dict[str, Any]]:
    return query(
        url,
        "SELECT d.id, e.message_id, d.rule, d.send_index, d.sink, d.idempotency_key, d.status,"
        " d.attempts, d.lease_until FROM deliveries d JOIN events e ON e.id = d.event_id"
        " ORDER BY d.created_at, d.id",
    )


def wait_rows(
    url: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float, what: str
) -> list[dict[str, Any]]:
    """Poll the stored deliveries until ``done(rows)``; fail at the deadline, showing them."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = stored_deliveries(url)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s:.0f} s: {rows}"
        time.sleep(0.25)


def wait_all_delivered(url: str, timeout_s: float) -> list[dict[str, Any]]:
    return wait_rows(
        url,
        lambda rows: bool(rows) and all(r["status"] == "delivered" for r in rows),
        timeout_s,
        "every delivery delivered",
    )


def db_upgrade(project: E2EProject, url: str) -> str:
    """`relay db upgrade --database URL` as ops run it (no RELAY_DATABASE_URL); its stdout."""
    env = {k: v for k, v in project.env().items() if k != "RELAY_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "db", "upgrade", "--database", url],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"relay db upgrade exited {done.returncode}: {done.stderr}"
    assert done.stderr == ""
    return done.stdout


# --- the project and the fleet -------------------------------------------------------------------


@dataclass
class PostgresProject(E2EProject):
    """A harness project whose relays use ``database_url`` instead of the SQLite file."""

    database_url: str = ""

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "RELAY_DATABASE_URL": self.database_url,
            "RELAY_LEASE_MARGIN_S": str(LEASE_MARGIN_S),
        }


def postgres_project(root: Path, upstream: FakeUpstream, url: str) -> PostgresProject:
    base = make_project(root, upstream)
    rules = RULES.format(
        source_path=SOURCE_PATH,
        upstream=upstream.url,
        audit_path=AUDIT_PATH,
        timeout_s=SINK_TIMEOUT_S,
    )
    (base.root / "rules.yaml").write_text(rules, encoding="utf-8")
    return PostgresProject(base.root, upstream, url)


def start_fleet(project: E2EProject, count: int, relays: list[RelayProcess]) -> list[RelayProcess]:
    """``count`` `relay serve` processes on their own ports, started at once; all ready."""
    fleet = [RelayProcess(project) for _ in range(count)]
    relays.extend(fleet)  # the harness fixture stops them and prints their logs
    with ThreadPoolExecutor(count) as pool:
        for started in [pool.submit(relay.start) for relay in fleet]:
            started.result()
    assert len({relay.port for relay in fleet}) == count
    return fleet


class SlowUpstream(FakeUpstream):
    """The harness's fake upstream, answering every request ``delay_s`` after it arrived (it is
    recorded on arrival): each attempt stays in flight long enough for a SIGKILL to cut it."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def _record(self, request: Recorded) -> Answer | Drop:
        reply = super()._record(request)
        time.sleep(self.delay_s)
        return reply


@pytest.fixture
def slow_upstream() -> Iterator[SlowUpstream]:
    with SlowUpstream(UPSTREAM_DELAY_S) as server:
        yield server


def wall_clock(request: Recorded) -> float:
    """When the upstream received ``request``, on the relays' clock (time.time)."""
    return request.at + (time.time() - time.monotonic())


def sent_keys(upstream: FakeUpstream) -> list[Recorded]:
    """The requests of both sinks (every one carries an Idempotency-Key)."""
    found = upstream.requests(EMAILS_PATH) + upstream.requests(AUDIT_PATH)
    assert len(found) == len(upstream.requests()), "requests to an unexpected path"
    return found


# --- posting like Svix through a load balancer ---------------------------------------------------


@dataclass(frozen=True)
class Ack:
    msg_id: str
    status: str  # accepted | duplicate
    replica: int  # the index of the replica that answered 200
    failovers: int  # replicas tried before it (connection refused or cut, or 503)
    took_s: float  # from the first try to the ack


def post_with_failover(
    fleet: list[RelayProcess], first: int, body: bytes, headers: Mapping[str, str]
) -> Ack:
    """POST to ``fleet[first]``; on a connection error or a 503, the same request (same svix-id)
    to the next replica, as a load balancer would, and after a round of failures again a little
    later, as Svix would (for up to 30 s); 200 is the ack."""
    errors: list[str] = []
    began = time.monotonic()
    turn = 0
    while time.monotonic() - began < 30:
        index = (first + turn) % len(fleet)
        turn += 1
        try:
            response = httpx.post(
                fleet[index].webhook_url, content=body, headers=headers, timeout=10
            )
        except httpx.TransportError as exc:
            errors.append(f"replica {index}: {type(exc).__name__}: {exc}")
        else:
            if response.status_code != 503:
                assert response.status_code == 200, f"replica {index}: {response.text}"
                took = time.monotonic() - began
                return Ack(headers["svix-id"], response.json()["status"], index, turn - 1, took)
            errors.append(f"replica {index}: 503 {response.text}")
        if turn % len(fleet) == 0:
            time.sleep(0.25)  # every replica failed: Svix retries later
    raise AssertionError(f"{headers['svix-id']} never acknowledged: {errors[-6:]}")


# --- the tests ------------------------------------------------------------------------------------


def test_relay_db_upgrade_creates_then_keeps_the_schema(
    postgres_url: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """`relay db upgrade --database URL` creates the schema once, then finds it up to date."""
    project = postgres_project(tmp_path / "project", upstream, postgres_url)
    shown = redact_url(postgres_url)
    assert db_upgrade(project, postgres_url) == (
        f"database {shown}: upgraded from 0 to {SCHEMA_VERSION}\n"
    )
    assert db_upgrade(project, postgres_url) == (
        f"database {shown}: schema version {SCHEMA_VERSION} (up to date)\n"
    )
    assert query(postgres_url, "SELECT version FROM relay_schema") == [{"version": SCHEMA_VERSION}]


def test_one_svix_id_posted_to_three_replicas_at_once_is_stored_and_sent_once(
    postgres_url: str, upstream: FakeUpstream, tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """The same signed request at three replicas at the same instant: one accepts, two answer
    duplicate, the store has one event with its two deliveries, and each is sent once."""
    project = postgres_project(tmp_path / "project", upstream, postgres_url)
    db_upgrade(project, postgres_url)
    fleet = start_fleet(project, 3, relays)
    rounds = 20
    requests = []
    for n in range(rounds):
        body = json.dumps(user_created(project, n)).encode()
        requests.append((body, signed_headers(body)))
    barrier = threading.Barrier(len(fleet))
    answers: dict[int, list[str]] = {i: [] for i in range(len(fleet))}

    def sender(index: int) -> None:
        with httpx.Client(timeout=10) as client:
            client.get(fleet[index].url + "/healthz")  # connect before the first race
            for body, headers in requests:
                barrier.wait(timeout=30)
                response = client.post(fleet[index].webhook_url, content=body, headers=headers)
                assert response.status_code == 200, response.text
                answers[index].append(response.json()["status"])

    with ThreadPoolExecutor(len(fleet)) as pool:
        for done in [pool.submit(sender, i) for i in range(len(fleet))]:
            done.result()

    per_message = [sorted(answers[i][n] for i in answers) for n in range(rounds)]
    assert per_message == [["accepted", "duplicate", "duplicate"]] * rounds
    winners = collections.Counter(
        i for i in answers for status in answers[i] if status == "accepted"
    )
    msg_ids = [headers["svix-id"] for _, headers in requests]
    events = stored_events(postgres_url)
    assert sorted(e["message_id"] for e in events) == sorted(msg_ids)

    expected = {idempotency_key("clerk", m, rule, i) for m in msg_ids for rule, i in SENDS}
    rows = wait_all_delivered(postgres_url, 30)
    assert sorted(r["idempotency_key"] for r in rows) == sorted(expected)
    assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
    received = collections.Counter(r.idempotency_key for r in sent_keys(upstream))
    assert received == dict.fromkeys(expected, 1), "a key was sent twice, or one never"
    print(
        f"\n{rounds} svix-ids x {len(fleet)} replicas at once: {len(events)} events stored, "
        f"accepted by replica {dict(sorted(winners.items()))}, {len(rows)} deliveries, "
        f"{sum(received.values())} upstream requests"
    )


def test_burst_over_three_replicas_one_sigkilled_loses_nothing_and_sends_each_key_once(
    postgres_url: str, slow_upstream: SlowUpstream, tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """150 signed user.created round-robin over 3 replicas; the middle one is SIGKILLed halfway
    through the burst, while it has attempts in flight. Every event is acknowledged (posts cut
    by the kill go to another replica, same svix-id) and stored once; each of its 2 deliveries
    ends delivered, once, in the store; the upstream receives every idempotency key, and a key
    twice only if the dead replica's attempt of it was cut — its lease expired (timeout_s + 60 s)
    and a survivor sent it again. Waits ~62 s for that lease (see the module docstring)."""
    began = time.monotonic()
    upstream = slow_upstream
    project = postgres_project(tmp_path / "project", upstream, postgres_url)
    assert db_upgrade(project, postgres_url) == (
        f"database {redact_url(postgres_url)}: upgraded from 0 to {SCHEMA_VERSION}\n"
    )
    fleet = start_fleet(project, 3, relays)
    victim = fleet[1]
    started = time.monotonic()

    posts = []
    for n in range(EVENTS):
        body = json.dumps(user_created(project, n)).encode()
        posts.append((n, body, signed_headers(body)))
    futures: list[Future[Ack]] = []
    killed_at = kill_after_s = 0.0
    with ThreadPoolExecutor(CLIENTS) as pool:
        for n, body, headers in posts:
            if n == EVENTS // 2:
                # Halfway through the burst, while attempts are in flight (each takes 0.5 s).
                upstream.wait_for(EMAILS_PATH, 1)
                upstream.wait_for(AUDIT_PATH, 1)
                victim.kill()
                killed_at = time.time()  # after: every claim of the victim is older
                kill_after_s = time.monotonic() - started
            futures.append(pool.submit(post_with_failover, fleet, n % len(fleet), body, headers))
            time.sleep(POST_EVERY_S)
        acks = [future.result() for future in futures]
    posted_at = time.monotonic()
    msg_ids = [headers["svix-id"] for _, _, headers in posts]
    assert [a.msg_id for a in acks] == msg_ids
    assert victim.proc is not None
    assert victim.proc.returncode == -9

    # The survivors send everything but what the victim had claimed, then fall quiet.
    deadline = time.monotonic() + 30
    seen, quiet_since = -1, time.monotonic()
    while True:
        count = len(upstream.requests())
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_S:
            break
        assert time.monotonic() < deadline, "the survivors never fell quiet"
        time.sleep(0.1)
    now = time.time()
    stranded = {
        r["idempotency_key"]: r
        for r in stored_deliveries(postgres_url)
        if r["status"] != "delivered"
    }
    assert stranded, (
        "the SIGKILL landed while the victim had no delivery claimed: the lease expiry was not "
        "tested (make the upstream slower or kill later)"
    )
    assert len(stranded) <= len(SENDS) * CONCURRENCY, "more than the victim can have claimed"
    for row in stranded.values():
        # Claimed by the victim before the kill, never recorded, still leased to the dead one.
        assert (row["status"], row["attempts"]) == ("pending", 0), row
        assert row["lease_until"] is not None, row
        assert row["lease_until"] > now, row
        assert row["lease_until"] - LEASE_S <= killed_at, row
    # The stranded keys that the victim had already sent when it died: its attempts cut short.
    cut = {r.idempotency_key for r in sent_keys(upstream)} & set(stranded)

    # When the leases end, a survivor claims and sends those deliveries.
    lease_ends = max(r["lease_until"] for r in stranded.values())
    rows = wait_all_delivered(postgres_url, lease_ends - time.time() + 20)
    recovered_at = time.monotonic()

    # Stored: one event per svix-id, two deliveries each, every one delivered in one attempt.
    events = stored_events(postgres_url)
    assert sorted(e["message_id"] for e in events) == sorted(msg_ids)
    expected = {idempotency_key("clerk", m, rule, i) for m in msg_ids for rule, i in SENDS}
    assert sorted(r["idempotency_key"] for r in rows) == sorted(expected)
    assert {(r["status"], r["attempts"], r["lease_until"]) for r in rows} == {
        ("delivered", 1, None)
    }

    # Sent: every key, to the right place; twice only a key whose first attempt the kill cut.
    requests = sent_keys(upstream)
    keys = [r.idempotency_key for r in requests]
    assert None not in keys, "a request without an Idempotency-Key"
    received = collections.Counter(key for key in keys if key is not None)
    assert set(received) == expected
    twice = {key for key, count in received.items() if count > 1}
    assert max(received.values()) <= 2, received.most_common(3)
    assert twice <= cut, f"sent twice, not cut by the kill: {sorted(twice - cut)}"
    key_of = {
        idempotency_key("clerk", headers["svix-id"], rule, i): (n, rule)
        for n, _, headers in posts
        for rule, i in SENDS
    }
    for request in requests:
        n, rule = key_of[request.idempotency_key or ""]
        if rule == "welcome-email":
            assert request.path == EMAILS_PATH
            assert request.json["to"] == [f"user{n}@example.com"]
        else:
            assert request.path == AUDIT_PATH
            assert request.json["data"]["id"] == f"user_e2e_{n:03d}"
    for key, row in stranded.items():
        last = [r for r in requests if r.idempotency_key == key][-1]
        assert wall_clock(last) >= row["lease_until"] - 0.05, "sent again before the lease ended"

    statuses = collections.Counter(a.status for a in acks)
    failed_over = [a for a in acks if a.failovers]
    slowest = max(a.took_s for a in acks)
    assert statuses["accepted"] + statuses["duplicate"] == EVENTS
    assert all(a.failovers for a in acks if a.status == "duplicate"), "a duplicate without a retry"
    assert all(a.replica != 1 for a in acks[EVENTS // 2 :]), "the dead replica answered"
    print(
        f"\nreplicas 3, SIGKILLed 1 at event {EVENTS // 2}: events posted {EVENTS}, "
        f"acknowledged {len(acks)} (accepted {statuses['accepted']}, duplicate after a cut post "
        f"{statuses['duplicate']}; failed over to another replica {len(failed_over)}), stored "
        f"{len(events)}; deliveries {len(rows)} delivered; upstream requests {len(requests)} for "
        f"{len(received)} keys, duplicates by key {len(twice)} (the victim's claims stranded by "
        f"the kill {len(stranded)}, already sent {len(cut)}); slowest ack {slowest:.2f} s; SIGKILL "
        f"{kill_after_s:.1f} s into the burst of {posted_at - started:.1f} s, "
        f"lease wait {recovered_at - posted_at:.1f} s, total {time.monotonic() - began:.1f} s"
    )


# --- a rolling deploy ----------------------------------------------------------------------------

NEW_RULE = """
  - name: signup-audit-v2
    events: user.created
    send:
      - sink: audit
"""


def test_rolling_deploy_old_replica_leaves_a_new_rules_deliveries_to_a_new_replica(
    postgres_url: str, upstream: FakeUpstream, tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """Mid-rollout: the new rules.yaml adds a rule; a new replica (ingest only) accepts an event,
    and the only worker is still an old replica. The old one must deliver what it knows and leave
    the new rule's delivery pending for a replica that knows the rule — not kill it."""
    old = postgres_project(tmp_path / "old", upstream, postgres_url)
    new = postgres_project(tmp_path / "new", upstream, postgres_url)
    with (new.root / "rules.yaml").open("a", encoding="utf-8") as rules:
        rules.write(NEW_RULE)
    db_upgrade(old, postgres_url)
    old_relay, new_ingest = RelayProcess(old), RelayProcess(new, serve_args=("--no-worker",))
    relays.extend([old_relay, new_ingest])
    old_relay.start()
    new_ingest.start()

    response = new_ingest.post(user_created(new, 1))
    assert response.status_code == 200
    assert response.json()["deliveries"] == 3
    rows = wait_rows(
        postgres_url,
        lambda rows: sum(r["status"] == "delivered" for r in rows) >= 2,
        15,
        "the old replica delivers the two sends it knows",
    )
    (added,) = [r for r in rows if r["rule"] == "signup-audit-v2"]
    assert added["status"] != "dead", (
        f"the old replica dead-lettered a new rule's delivery: {added}"
    )

    new_worker = RelayProcess(new)
    relays.append(new_worker)
    new_worker.start()
    rows = wait_all_delivered(postgres_url, 15)
    received = collections.Counter(r.idempotency_key for r in sent_keys(upstream))
    assert received[added["idempotency_key"]] == 1
