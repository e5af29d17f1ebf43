"""`relay serve` end to end: real processes, real HTTP, a fake Resend/Slack/HTTP upstream.

Each test starts its own relay (its own store) unless it only sends requests that must be
rejected; those share one relay, which must never store anything.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    RESEND_API_KEY,
    SLACK_PATH,
    E2EProject,
    RelayProcess,
    make_project,
    new_msg_id,
    signed_headers,
    user_created,
)
from tests.e2e.upstream import EMAILS_PATH, FakeUpstream

pytestmark = pytest.mark.e2e

OTHER_SECRET = "whsec_plJ3nmyCDGBKInavdOK15jsl"
MIB = 1024 * 1024


def by_sink(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["sink"], []).append(row)
    return found


# --- the happy paths ---------------------------------------------------------------------------


def test_user_created_sends_one_email_to_primary_address_and_one_slack_alert(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """A signed user.created yields one welcome email to the primary address and one Slack post."""
    response = relay.post(user_created(e2e_project))
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert response.json()["deliveries"] == 2

    (email,) = upstream.wait_for(EMAILS_PATH, 1)
    (slack,) = upstream.wait_for(SLACK_PATH, 1)
    rows = e2e_project.db.wait_idle()

    assert email.method == "POST"
    assert email.headers["authorization"] == f"Bearer {RESEND_API_KEY}"
    assert email.json["to"] == ["ada@example.com"]  # the primary one, not email_addresses[0]
    assert email.json["from"] == "Acme <hello@acme.example>"
    assert email.json["subject"] == "Welcome to Acme, Ada!"
    assert "ada@example.com" in email.json["text"]
    assert "<h1" in email.json["html"]
    assert slack.json["text"] == "New sign-up: Ada (ada@example.com)"
    assert slack.json["blocks"][0]["type"] == "section"
    assert {(r["sink"], r["status"], r["attempts"]) for r in rows} == {
        ("email", "delivered", 1),
        ("slack-signups", "delivered", 1),
    }
    assert email.idempotency_key == by_sink(rows)["email"][0]["idempotency_key"]
    assert len(upstream.requests()) == 2


def test_membership_events_reach_the_http_sink(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """organizationMembership.created and .deleted each post one JSON body to the HTTP sink."""
    for name in ("organizationMembership.created.json", "organizationMembership.deleted.json"):
        assert relay.post(e2e_project.sample(name)).status_code == 200

    posts = upstream.wait_for(MEMBERSHIP_PATH, 2)
    e2e_project.db.wait_idle()

    assert sorted(p.json["action"] for p in posts) == ["added", "removed"]
    for post in posts:
        assert post.headers["content-type"] == "application/json"
        assert post.json["organization_id"].startswith("org_")
        assert post.json["user_id"].startswith("user_")
    assert len({p.idempotency_key for p in posts}) == 2
    assert upstream.requests(EMAILS_PATH) == upstream.requests(SLACK_PATH) == []


# --- bad requests: rejected, nothing stored ----------------------------------------------------


@pytest.fixture(scope="module")
def quiet_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def quiet_relay(
    tmp_path_factory: pytest.TempPathFactory, quiet_upstream: FakeUpstream
) -> Iterator[RelayProcess]:
    """One relay for the requests that must be rejected: its store must stay empty."""
    project = make_project(tmp_path_factory.mktemp("quiet") / "project", quiet_upstream)
    relay = RelayProcess(project)
    try:
        yield relay.start()
    finally:
        relay.stop()
        print(relay.log())


def assert_nothing_stored(relay: RelayProcess, upstream: FakeUpstream) -> None:
    assert relay.project.db.events() == []
    assert relay.project.db.deliveries() == []
    assert upstream.requests() == []


USER = json.dumps({"type": "user.created", "data": {"id": "user_1"}}).encode()


def _case(
    headers: Callable[[bytes], dict[str, str]], reason: str, body: bytes = USER
) -> tuple[Any, ...]:
    return (headers, body, reason)


def _without(name: str) -> Callable[[bytes], dict[str, str]]:
    def headers(body: bytes) -> dict[str, str]:
        signed = signed_headers(body)
        del signed[name]
        return signed

    return headers


def _with(name: str, value: str) -> Callable[[bytes], dict[str, str]]:
    def headers(body: bytes) -> dict[str, str]:
        return {**signed_headers(body), name: value}

    return headers


def _at(offset_s: int) -> Callable[[bytes], dict[str, str]]:
    return lambda body: signed_headers(body, timestamp=int(time.time()) + offset_s)


NO_MATCH = "no matching signature"
REJECTED = {
    "missing svix-id": _case(_without("svix-id"), "missing svix-id header"),
    "missing svix-timestamp": _case(_without("svix-timestamp"), "missing svix-timestamp header"),
    "missing svix-signature": _case(_without("svix-signature"), "missing svix-signature header"),
    "no signature headers at all": _case(
        lambda body: {"content-type": "application/json"}, "missing svix-id header"
    ),
    "signed with another secret": _case(
        lambda body: signed_headers(body, secret=OTHER_SECRET), NO_MATCH
    ),
    "signature of another body": _case(lambda body: signed_headers(body + b" "), NO_MATCH),
    "signature not base64": _case(_with("svix-signature", "v1,!!!not-base64!!!"), NO_MATCH),
    "signature without version": _case(_with("svix-signature", "garbage"), NO_MATCH),
    "signature of unknown version only": _case(_with("svix-signature", "v2,YWJj"), NO_MATCH),
    "empty signature": _case(_with("svix-signature", ""), "empty svix-signature header"),
    "timestamp not an integer": _case(
        _with("svix-timestamp", "12.5"), "svix-timestamp header is not an integer"
    ),
    "timestamp not a number": _case(
        _with("svix-timestamp", "yesterday"), "svix-timestamp header is not an integer"
    ),
    "stale timestamp": _case(_at(-600), "timestamp too old"),
    "future timestamp": _case(_at(+600), "timestamp in the future"),
    "signed body not JSON": _case(signed_headers, "body is not valid JSON", b"not json"),
    "signed body a JSON array": _case(
        signed_headers, "body is not a JSON object", b'[{"type": "user.created"}]'
    ),
    "signed body a JSON string": _case(
        signed_headers, "body is not a JSON object", b'"user.created"'
    ),
    "signed body not UTF-8": _case(
        signed_headers, "body is not valid JSON", b'{"type": "user.created\xff"}'
    ),
    "signed object without type": _case(
        signed_headers, "event has no 'type'", b'{"data": {"id": "user_1"}}'
    ),
}


@pytest.mark.parametrize(("headers", "body", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_bad_request_is_400_and_stores_nothing(
    quiet_relay: RelayProcess,
    quiet_upstream: FakeUpstream,
    headers: Callable[[bytes], dict[str, str]],
    body: bytes,
    reason: str,
) -> None:
    """Bad or missing signature headers, a stale or future timestamp, or a signed body that is
    not a JSON object with a type: 400, and no event, delivery or outbound request."""
    response = quiet_relay.post(body, headers=headers(body))
    assert response.status_code == 400, response.text
    assert response.json() == {"status": "rejected", "reason": reason}
    assert_nothing_stored(quiet_relay, quiet_upstream)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_over_one_mebibyte_is_413_and_stores_nothing(
    quiet_relay: RelayProcess, quiet_upstream: FakeUpstream, declared: bool
) -> None:
    """A signed body of 1 MiB + 1 byte (declared or streamed) is a 413, storing nothing."""
    event = {"type": "user.created", "data": {"id": "user_1"}, "pad": ""}
    event["pad"] = "x" * (MIB + 1 - len(json.dumps(event).encode()))
    body = json.dumps(event).encode()
    assert len(body) == MIB + 1
    headers = signed_headers(body)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    content: bytes | Iterator[bytes] = body if declared else chunks()
    response = httpx.post(quiet_relay.webhook_url, content=content, headers=headers, timeout=30)
    assert response.status_code == 413
    assert response.json() == {"status": "rejected", "reason": f"body larger than {MIB} bytes"}
    assert response.headers["connection"] == "close"  # the unread rest is not waited for
    assert_nothing_stored(quiet_relay, quiet_upstream)


def test_body_of_exactly_one_mebibyte_is_accepted(
    relay: RelayProcess, e2e_project: E2EProject
) -> None:
    """The limit is inclusive: a signed body of exactly 1 MiB is stored (2xx)."""
    event = {"type": "user.updated", "data": {"id": "user_1"}, "pad": ""}
    event["pad"] = "x" * (MIB - len(json.dumps(event).encode()))
    body = json.dumps(event).encode()
    assert len(body) == MIB
    assert relay.post(body).status_code == 200
    assert [e["type"] for e in e2e_project.db.events()] == ["user.updated"]


def test_repeated_svix_id_is_2xx_and_adds_no_deliveries(
    relay: RelayProcess, e2e_project: E2EProject
) -> None:
    """The same svix-id again (re-signed, as Svix retries) is a 2xx duplicate storing nothing."""
    event = user_created(e2e_project)
    msg_id = new_msg_id()
    first = relay.post(event, msg_id=msg_id)
    again = relay.post(event, msg_id=msg_id, timestamp=int(time.time()) + 1)

    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert [e["message_id"] for e in e2e_project.db.events()] == [msg_id]
    assert len(e2e_project.db.deliveries()) == 2


def test_event_type_no_rule_matches_is_stored_without_deliveries(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """An event no rule matches (here a type Clerk may add later) is a 2xx, stored, with no
    delivery and no outbound request."""
    msg_id = new_msg_id()
    response = relay.post({"type": "widget.exploded", "data": {"id": "w_1"}}, msg_id=msg_id)

    assert response.status_code == 200
    assert response.json()["deliveries"] == 0
    assert [(e["message_id"], e["type"]) for e in e2e_project.db.events()] == [
        (msg_id, "widget.exploded")
    ]
    assert e2e_project.db.deliveries() == []
    assert upstream.requests() == []


def test_store_cannot_commit_is_503_and_the_retry_is_accepted(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """While another connection holds the database's write lock, ingest answers 503 and stores
    nothing; Svix's retry of the same message after the lock is gone is accepted and delivered."""
    event = user_created(e2e_project)
    msg_id = new_msg_id()
    locker = sqlite3.connect(e2e_project.root / "relay.db", isolation_level=None, timeout=10)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        refused = relay.post(event, msg_id=msg_id)
        took_s = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert refused.status_code == 503, refused.text
    assert refused.json()["status"] == "store_unavailable"
    assert took_s >= 4  # it waited out the store's 5 s busy timeout, then gave up
    assert e2e_project.db.events() == []
    assert e2e_project.db.deliveries() == []

    retried = relay.post(event, msg_id=msg_id)
    assert (retried.status_code, retried.json()["status"]) == (200, "accepted")
    upstream.wait_for(EMAILS_PATH, 1)
    upstream.wait_for(SLACK_PATH, 1)
    assert {r["status"] for r in e2e_project.db.wait_idle()} == {"delivered"}


# --- delivery: retries, dead letters, crashes, load ----------------------------------------------


def test_retried_svix_id_sends_nothing_new(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """After an event is delivered, Svix retrying the same svix-id sends no second email or post."""
    event = user_created(e2e_project)
    msg_id = new_msg_id()
    assert relay.post(event, msg_id=msg_id).status_code == 200
    upstream.wait_for(EMAILS_PATH, 1)
    upstream.wait_for(SLACK_PATH, 1)
    before = e2e_project.db.wait_idle()

    for offset_s in (5, 60):  # Svix re-signs each retry with the time of that attempt
        retry = relay.post(event, msg_id=msg_id, timestamp=int(time.time()) + offset_s)
        assert (retry.status_code, retry.json()["status"]) == (200, "duplicate")

    after = e2e_project.db.wait_idle()
    assert after == before  # no new delivery, and every one is final: nothing left to send
    assert len(upstream.requests(EMAILS_PATH)) == len(upstream.requests(SLACK_PATH)) == 1


def test_sink_answering_500_then_200_is_retried_and_delivered_once(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """A 500 is retried after the backoff with the same Idempotency-Key; the 200 ends it."""
    upstream.script(MEMBERSHIP_PATH, [500, 200])
    assert relay.post(e2e_project.sample("organizationMembership.created.json")).status_code == 200

    first, second = upstream.wait_for(MEMBERSHIP_PATH, 2)
    (row,) = e2e_project.db.wait_idle()

    assert first.idempotency_key == second.idempotency_key == row["idempotency_key"]
    assert first.raw == second.raw
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    attempts = e2e_project.db.attempts(row["id"])
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (500, "failed"),
        (200, "delivered"),
    ]
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 2


def test_429_with_retry_after_waits_and_keeps_the_idempotency_key(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """Resend's 429 with Retry-After: 1 delays the retry by at least 1 s (far above the 0.2 s
    backoff) and the retry carries the same Idempotency-Key."""
    upstream.script(EMAILS_PATH, [(429, {"Retry-After": "1"}), 200])
    assert relay.post(user_created(e2e_project)).status_code == 200

    first, second = upstream.wait_for(EMAILS_PATH, 2)
    rows = by_sink(e2e_project.db.wait_idle())

    assert second.at - first.at >= 1.0
    assert first.idempotency_key == second.idempotency_key == rows["email"][0]["idempotency_key"]
    assert (rows["email"][0]["status"], rows["email"][0]["attempts"]) == ("delivered", 2)
    (failed, _) = e2e_project.db.attempts(rows["email"][0]["id"])
    assert failed["status_code"] == 429
    assert "retry in 1 s" in failed["error"]
    assert len(upstream.requests(EMAILS_PATH)) == 2


def test_422_is_dead_after_one_attempt(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """A 422 from the HTTP sink's target is permanent: dead after one attempt, never retried."""
    upstream.script(MEMBERSHIP_PATH, [422])
    assert relay.post(e2e_project.sample("organizationMembership.created.json")).status_code == 200

    (row,) = e2e_project.db.wait_idle()
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"].startswith("permanent error: ")
    assert "422" in row["last_error"]
    assert [a["outcome"] for a in e2e_project.db.attempts(row["id"])] == ["dead"]
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 1


def test_sigkill_between_attempts_delivers_after_restart(
    tmp_path: Path, upstream: FakeUpstream, relays: list[RelayProcess]
) -> None:
    """A relay killed (SIGKILL) while a delivery waits for its retry delivers it, once, with
    the same Idempotency-Key, when restarted on the same store."""
    project = make_project(tmp_path / "slow", upstream, membership_first_backoff_s=2)
    upstream.script(MEMBERSHIP_PATH, [500])
    first_run = RelayProcess(project)
    relays.append(first_run)
    first_run.start()
    assert first_run.post(project.sample("organizationMembership.created.json")).status_code == 200

    upstream.wait_for(MEMBERSHIP_PATH, 1)
    (row,) = project.db.wait(
        lambda rows: [(r["status"], r["attempts"]) for r in rows] == [("failed", 1)],
        what="the 500 recorded as a retry",
    )
    first_run.kill()
    assert row["next_attempt_at"] > time.time()  # killed between attempts, not after the retry
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 1

    second_run = RelayProcess(project)
    relays.append(second_run)
    second_run.start()
    first, second = upstream.wait_for(MEMBERSHIP_PATH, 2)
    (row,) = project.db.wait_idle()

    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert first.idempotency_key == second.idempotency_key == row["idempotency_key"]
    assert len(upstream.requests(MEMBERSHIP_PATH)) == 2


@pytest.mark.anyio
async def test_100_concurrent_distinct_events_all_deliver_exactly_once(
    relay: RelayProcess, upstream: FakeUpstream, e2e_project: E2EProject
) -> None:
    """100 distinct user.created posted at once: all 200, then exactly 100 emails (one per
    address) and 100 Slack posts, each delivery once, with distinct idempotency keys."""
    bodies = [json.dumps(user_created(e2e_project, n)).encode() for n in range(100)]
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post(relay.webhook_url, content=body, headers=signed_headers(body))
                for body in bodies
            )
        )
    assert [r.status_code for r in responses] == [200] * 100

    await asyncio.to_thread(upstream.wait_for, EMAILS_PATH, 100, 60)
    await asyncio.to_thread(upstream.wait_for, SLACK_PATH, 100, 60)
    rows = await asyncio.to_thread(e2e_project.db.wait_idle, 60)

    emails = upstream.requests(EMAILS_PATH)
    slacks = upstream.requests(SLACK_PATH)
    assert len(emails) == len(slacks) == 100
    assert sorted(e.json["to"][0] for e in emails) == sorted(
        f"user{n}@example.com" for n in range(100)
    )
    assert len({e.idempotency_key for e in emails}) == 100
    assert len({s.json["text"] for s in slacks}) == 100
    assert len(rows) == 200
    assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
    assert len({r["idempotency_key"] for r in rows}) == 200
    log = relay.log()
    assert TEST_SECRET not in log
    assert RESEND_API_KEY not in log
