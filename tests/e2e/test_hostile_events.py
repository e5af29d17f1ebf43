"""Signed events that are hostile data, against a real `relay serve`: text that is not valid
Unicode (a lone surrogate, a valid JSON escape) and JSON nested deeper than Python's recursion.
Each is the delivery's own problem: accepted, stored, routed, dead with its reason where a
template or a sink cannot handle it, and never in the way of the next ordinary sign-up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    RULES,
    SLACK_PATH,
    SOURCE_PATH,
    E2EProject,
    Fleet,
    user_created,
    value,
    wait_until,
)
from tests.e2e.upstream import EMAILS_PATH, FakeUpstream

pytestmark = pytest.mark.e2e

SINKS = ("email", "slack-signups", "membership-sync")


def lone_surrogate_user(project: E2EProject, n: int) -> dict[str, Any]:
    event = user_created(project, n)
    event["data"]["first_name"] = f"Ada\ud800{n}"  # json.dumps writes it as the escape \ud800
    return event


def test_lone_surrogates_go_dead_and_never_hold_back_the_next_sign_up(
    e2e_project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """Seven sign-ups whose names hold a lone surrogate and a membership whose user id does:
    each delivery to Resend, Slack and the HTTP sink is dead at its first attempt, saying the text
    is not valid Unicode; no circuit opens (threshold 5) and nothing reaches the upstream. An
    ordinary sign-up posted after them is delivered to both its sinks at once."""
    relay = fleet.start(e2e_project)
    for n in range(7):
        assert relay.post(lone_surrogate_user(e2e_project, n)).status_code == 200
    membership = e2e_project.sample("organizationMembership.created.json")
    membership["data"]["public_user_data"]["user_id"] = "user_\udfff"
    assert relay.post(membership).status_code == 200
    bad = e2e_project.db.wait_idle()
    assert len(bad) == 15
    for row in bad:
        assert (row["status"], row["attempts"]) == ("dead", 1), row
        assert "the message holds text that is not valid Unicode" in row["last_error"], row
    assert upstream.requests() == []

    posted = time.monotonic()
    assert relay.post(user_created(e2e_project, 100)).status_code == 200
    wait_until(
        "the ordinary sign-up delivered to Resend and Slack",
        lambda: upstream.requests(EMAILS_PATH) and upstream.requests(SLACK_PATH),
        timeout_s=10,
    )
    took_s = time.monotonic() - posted
    metrics = relay.metrics()
    print(f"\nlone surrogates: 15 deliveries dead at once; the next sign-up out in {took_s:.2f} s")
    for sink in SINKS:
        assert value(metrics, "relay_sink_circuit_state", sink=sink) == 0
    assert upstream.requests(MEMBERSHIP_PATH) == []


DEEP_RULE = """
  - name: audit-metadata
    events: user.created
    send:
      - sink: membership-sync
        template: audit.yaml
"""


def test_an_event_nested_100000_deep_is_accepted_stored_routed_and_delivered(
    upstream: FakeUpstream, fleet: Fleet, e2e_project: E2EProject
) -> None:
    """A signed user.created whose unsafe_metadata is nested 100,000 levels deep (what a user can
    write in Clerk; json.loads gives up near 1,000): 200 accepted with three deliveries, the raw
    signed body stored byte for byte; the welcome email and the Slack alert (which never look at
    the metadata) are delivered, and the one rule whose message holds the metadata is dead,
    saying why."""
    (e2e_project.root / "templates" / "audit.yaml").write_text(
        'body:\n  metadata: "{{ data.unsafe_metadata }}"\n', encoding="utf-8"
    )
    (e2e_project.root / "rules.yaml").write_text(
        RULES.format(source_path=SOURCE_PATH, upstream=upstream.url, membership_first_backoff_s=1)
        + DEEP_RULE,
        encoding="utf-8",
    )
    relay = fleet.start(e2e_project)
    event = user_created(e2e_project, 1)
    head = json.dumps(event)[:-1]  # the envelope, still open
    body = (
        head[: head.rindex("}")] + ', "unsafe_metadata": ' + "[" * 100_000 + '"x"' + "]" * 100_000
    )
    body += "}" + head[head.rindex("}") + 1 :] + "}"
    raw = body.encode()
    assert len(raw) < 1024 * 1024  # within the default max_body_bytes

    response = relay.post(raw)
    assert response.status_code == 200, response.text
    assert response.json()["deliveries"] == 3
    stored = e2e_project.db.query("SELECT body FROM events")
    assert stored == [{"body": raw}]
    rows = {row["rule"]: row for row in e2e_project.db.wait_idle()}
    assert rows["welcome-email"]["status"] == "delivered"
    assert rows["signup-alert"]["status"] == "delivered"
    audit = rows["audit-metadata"]
    assert audit["status"] == "dead"
    assert audit["last_error"].endswith("the message is nested too deeply to encode"), audit
    assert upstream.requests(MEMBERSHIP_PATH) == []
