"""Crash safety under load: a few hundred events from concurrent clients while the relay is
SIGKILLed at random moments and restarted on the same store; then every acknowledged event's
deliveries arrived, duplicates only where a kill cut an attempt, nothing half-stored.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.ids import idempotency_key
from tests.e2e.fault_rules import event
from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    SLACK_PATH,
    E2EProject,
    Fleet,
    free_port,
    make_project,
    new_msg_id,
    signed_headers,
    user_created,
)
from tests.e2e.upstream import EMAILS_PATH, Answer, FakeUpstream

pytestmark = pytest.mark.e2e


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
