"""Recipients on real `relay serve` processes with a fake Resend: an email of a category
carries its one-click unsubscribe headers to Resend's API; a POST to its link stops the next
email to that address (and only that one); a Svix-signed Resend `email.bounced` webhook (a hard
bounce) stops it too, through the suppression sink, while a soft bounce does not.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.harness import (
    SOURCE_PATH,
    E2EProject,
    Fleet,
    RelayProcess,
    free_port,
    run_cli,
    signed_headers,
    user_created,
    value,
    wait_until,
    with_env,
    write_rules,
)
from tests.e2e.upstream import EMAILS_PATH, FakeUpstream

pytestmark = pytest.mark.e2e

RESEND_SECRET = "whsec_plJ3nmyCDGBKInavdOK15jsl"  # the Resend endpoint's signing secret
UNSUBSCRIBE_SECRET = "e2e-Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE"
RULES = """\
version: 1
sources:
  clerk:
    path: {source_path}
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
  resend:
    path: /webhooks/resend
    verify: svix
    secret: ${{RESEND_WEBHOOK_SECRET}}
sinks:
  email:
    type: resend
    api_key: ${{RESEND_API_KEY}}
    from: Acme <hello@acme.example>
    base_url: {upstream}
    retry: {{first_backoff_s: 0.2, max_backoff_s: 1}}
  suppressions:
    type: suppression
rules:
  - name: tips
    events: user.created
    when: primary_email(data)
    unsubscribe: onboarding
    send:
      - sink: email
        template: onboarding-tips.yaml
        to: "{{{{ primary_email(data) }}}}"
  - name: suppress-hard-bounces
    events: email.bounced
    when: ((data.get('bounce') or {{}}).get('type') or '') | lower in ['permanent', 'hard']
    send:
      - sink: suppressions
        address: "{{{{ data.to }}}}"
        reason: bounced
"""


def start(project: E2EProject, fleet: Fleet) -> RelayProcess:
    """The recipients' rules, the links pointing at the relay's own (public) port."""
    port = free_port()
    text = RULES.format(source_path=SOURCE_PATH, upstream=project.upstream.url)
    write_rules(project, text)
    project = with_env(
        project,
        RESEND_WEBHOOK_SECRET=RESEND_SECRET,
        RELAY_UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET,
        RELAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    return fleet.start(project, port=port)


def settled(project: E2EProject, count: int) -> list[dict[str, Any]]:
    """The deliveries, once there are ``count`` and each is final."""
    return project.db.wait(
        lambda rows: (
            len(rows) == count
            and all(r["status"] in ("delivered", "dead", "suppressed") for r in rows)
        ),
        what=f"{count} final deliveries",
    )


def test_the_headers_reach_resend_and_a_post_to_the_link_stops_the_next_email(
    e2e_project: E2EProject, fleet: Fleet, upstream: FakeUpstream
) -> None:
    relay = start(e2e_project, fleet)
    assert relay.post(user_created(e2e_project, 1)).status_code == 200
    (first,) = upstream.wait_for(EMAILS_PATH, 1)
    sent = first.json
    assert sent["to"] == ["user1@example.com"]
    headers = sent["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.fullmatch(rf"<({re.escape(relay.url)}/unsubscribe/[A-Za-z0-9_.-]+)>",
                         headers["List-Unsubscribe"])  # fmt: skip
    assert found is not None, headers
    link = found[1]
    assert f"No more onboarding tips: {link}" in sent["text"]

    # What a mailbox provider does when its user clicks "unsubscribe" (RFC 8058).
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = httpx.post(link, content=b"List-Unsubscribe=One-Click", headers=form, timeout=10)
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers
    assert httpx.post(link, content=b"List-Unsubscribe=One-Click", timeout=10).status_code == 200
    forged = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    assert httpx.post(forged, timeout=10).status_code == 400

    assert relay.post(user_created(e2e_project, 1)).status_code == 200  # the same address again
    assert relay.post(user_created(e2e_project, 2)).status_code == 200  # someone else
    rows = settled(e2e_project, 3)
    upstream.wait_for(EMAILS_PATH, 2)
    time.sleep(0.5)  # a send to user1 would have come by now
    assert [r.json["to"] for r in upstream.requests(EMAILS_PATH)] == [
        ["user1@example.com"],
        ["user2@example.com"],
    ]
    assert [r["status"] for r in rows] == ["delivered", "suppressed", "delivered"]
    assert rows[1]["last_error"].startswith(
        "suppressed: user1@example.com is suppressed for 'onboarding' email: unsubscribed at "
    )

    listed = run_cli(e2e_project, "suppressions", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert (row["address"], row["scope"], row["reason"]) == (
        "user1@example.com",
        "onboarding",
        "unsubscribed",
    )
    shown = run_cli(e2e_project, "event", rows[1]["message_id"])
    assert "  status:       suppressed\n" in shown.stdout
    metrics = relay.metrics()
    assert value(metrics, "relay_unsubscribe_requests_total", method="POST",
                 outcome="unsubscribed") == 1  # fmt: skip
    assert value(metrics, "relay_unsubscribe_requests_total", method="POST",
                 outcome="already") == 1  # fmt: skip
    assert value(metrics, "relay_recipients_suppressed_total", sink="email", rule="tips",
                 reason="unsubscribed") == 1  # fmt: skip


def resend_webhook(relay: RelayProcess, event: dict[str, Any]) -> httpx.Response:
    """POST ``event`` to the resend source, signed as Resend (through Svix) signs it."""
    raw = json.dumps(event).encode()
    headers = signed_headers(raw, secret=RESEND_SECRET)
    return httpx.post(relay.url + "/webhooks/resend", content=raw, headers=headers, timeout=30)


def bounce(kind: str, address: str) -> dict[str, Any]:
    """Resend's documented email.bounced payload (the shipped example's sample)."""
    sample = ROOT / "examples" / "resend-bounces" / "samples" / "email.bounced.json"
    event: dict[str, Any] = copy.deepcopy(json.loads(sample.read_text("utf-8")))
    event["data"]["to"] = [address]
    event["data"]["bounce"]["type"] = kind
    return event


def test_a_resend_hard_bounce_stops_the_next_email_and_a_soft_one_does_not(
    e2e_project: E2EProject, fleet: Fleet, upstream: FakeUpstream
) -> None:
    relay = start(e2e_project, fleet)
    labels = {"sink": "email", "rule": "tips"}
    at_start = relay.metrics()  # every email send's series exists from the start, at zero
    for reason in ("bounced", "complained", "unsubscribed", "manual"):
        key = ("relay_recipients_suppressed_total", frozenset({**labels, "reason": reason}.items()))
        assert at_start[key] == 0
    assert resend_webhook(relay, bounce("Permanent", "User1@Example.com")).status_code == 200
    assert resend_webhook(relay, bounce("Transient", "user2@example.com")).status_code == 200
    wait_until(
        "the hard bounce suppressed",
        lambda: e2e_project.db.query("SELECT address, scope, reason FROM suppressions"),
    )
    assert relay.post(user_created(e2e_project, 1)).status_code == 200
    assert relay.post(user_created(e2e_project, 2)).status_code == 200
    rows = settled(e2e_project, 3)  # the bounce's suppression, and the two tips
    upstream.wait_for(EMAILS_PATH, 1)
    time.sleep(0.5)  # a send to user1 would have come by now
    assert [r.json["to"] for r in upstream.requests(EMAILS_PATH)] == [["user2@example.com"]]
    assert e2e_project.db.query("SELECT address, scope, reason, event_id FROM suppressions") == [
        {"address": "user1@example.com", "scope": "all", "reason": "bounced",
         "event_id": rows[0]["message_id"]}
    ]  # fmt: skip
    tips = [r for r in rows if r["rule"] == "tips"]
    assert [r["status"] for r in tips] == ["suppressed", "delivered"]
    assert tips[0]["last_error"].startswith(
        "suppressed: user1@example.com is suppressed for all email: bounced at "
    )
    assert value(relay.metrics(), "relay_recipients_suppressed_total", sink="email", rule="tips",
                 reason="bounced") == 1  # fmt: skip
