"""Recipients through the worker, on SQLite and PostgreSQL, with a fake clock: a hard bounce
fed to the suppression sink holds back the next email to that address (and no other), whatever
its case or spacing; a soft bounce does not; scopes (all email, one category); recipients left
out of an email to others; a replay looked up again; the unsubscribe headers in the message.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import Config, load_config
from relay.delivery.worker import Runtime, Worker
from relay.ids import new_id
from relay.metrics import Metrics
from relay.recipients.addresses import Reason, Suppression
from relay.server.lifespan import build_sinks
from relay.store import DeliveryRecord, DeliveryStatus, NewEvent, Store
from relay.workflow.plan import Arrival, plan_event
from tests.delivery.worker_harness import ENV, T0, Clock, ScriptedSink

pytestmark = pytest.mark.anyio

SECRET = "Zk3pQ8vR1tX6yB9mN2cL5hJ7gD4sA0wE"
RULES = """\
version: 1
sources:
  clerk:
    path: /webhooks/clerk
    secret: ${CLERK_WEBHOOK_SIGNING_SECRET}
sinks:
  email:
    type: resend
    api_key: re_test_key_1234567890
    from: Acme <hello@acme.example>
  suppressions:
    type: suppression
rules:
  - name: welcome
    events: user.created
    send:
      - sink: email
        template: note.yaml
        to: "{{ data.to }}"
        cc: "{{ data.get('cc') or '' }}"
  - name: tips
    events: user.updated
    unsubscribe: onboarding
    send:
      - sink: email
        template: tips.yaml
        to: "{{ data.to }}"
  - name: suppress-hard-bounces
    events: email.bounced
    when: ((data.get('bounce') or {}).get('type') or '') | lower in ['permanent', 'hard']
    send:
      - sink: suppressions
        address: "{{ data.to }}"
        reason: bounced
"""
TEMPLATES = {
    "note.yaml": 'subject: "Hello"\ntext: "Hello {{ data.to }}"\n',
    "tips.yaml": 'subject: "Tips"\ntext: "Tips. No more: {{ unsubscribe_url }}"\n',
}
ENVIRONMENT = {
    **ENV,
    "RELAY_UNSUBSCRIBE_SECRET": SECRET,
    "RELAY_PUBLIC_URL": "https://relay.acme.example",
}


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_store


def load(root: Path) -> Config:
    templates = root / "templates"
    templates.mkdir(parents=True)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text, encoding="utf-8")
    (root / "rules.yaml").write_text(textwrap.dedent(RULES), encoding="utf-8")
    return load_config(root / "rules.yaml", templates, env=ENVIRONMENT)


class Mail:
    """The store, the config, a fake clock, the email sink's messages (the suppression sink is
    the real one, on the store) and a worker."""

    def __init__(self, store: Store, config: Config, http: httpx.AsyncClient) -> None:
        self.store, self.config, self.clock = store, config, Clock(T0)
        self.email = ScriptedSink()
        sinks = build_sinks(config, http, dry_run=False, suppressions=store, clock=self.clock)
        sinks["email"] = self.email
        self.metrics = Metrics()
        runtime = Runtime(config, sinks, loaded_at=0.0)
        self.worker = Worker(store, lambda: runtime, clock=self.clock, metrics=self.metrics)
        self.events = 0

    async def post(self, type: str, **data: Any) -> str:
        """Receive an event now, as ingest stores it, and run what is due; its id."""
        self.events += 1
        envelope = {"type": type, "data": data}
        event_id, message_id = new_id("evt"), f"msg_{self.events}"
        now = self.clock()
        plan = plan_event(
            self.config.rules, envelope, Arrival("clerk", message_id, event_id, type, now)
        )
        body = json.dumps(envelope).encode()
        await self.store.admit(NewEvent(event_id, "clerk", message_id, type, now, body),
                               plan.deliveries, plan.steps)  # fmt: skip
        await self.worker.tick()
        await self.worker.drain()
        self.clock.now += 1
        return event_id

    async def delivery(self, event_id: str) -> DeliveryRecord:
        (found,) = await self.store.list_deliveries(event_id=event_id)
        return found

    def sent_to(self) -> list[Any]:
        return [m.payload["to"] for m in self.email.messages]

    def counted(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def mail(store: Store, tmp_path: Path) -> AsyncIterator[Mail]:
    async with httpx.AsyncClient() as http:
        yield Mail(store, load(tmp_path / "project"), http)


def bounce(kind: str, *to: str) -> dict[str, Any]:
    return {"to": list(to), "email_id": "e1", "bounce": {"type": kind, "subType": "General"}}


async def test_a_hard_bounce_suppresses_the_next_email_to_that_address_and_no_other(
    mail: Mail,
) -> None:
    """ada gets her email; Resend reports a hard bounce (her address in other case); her next
    email is suppressed, not sent, with a reason naming the suppression; bob's goes out."""
    await mail.post("user.created", to="ada@example.com")
    bounced = await mail.post("email.bounced", **bounce("Permanent", "Ada@Example.COM"))
    assert (await mail.delivery(bounced)).status is DeliveryStatus.DELIVERED
    [suppression] = await mail.store.list_suppressions()
    assert suppression == Suppression("ada@example.com", "all", Reason.BOUNCED, "msg_2", T0 + 1)
    held = await mail.post("user.created", to="ada@example.com")
    await mail.post("user.created", to="bob@example.com")
    assert mail.sent_to() == ["ada@example.com", "bob@example.com"]
    record = await mail.delivery(held)
    assert record.status is DeliveryStatus.SUPPRESSED
    assert record.last_error == (
        "suppressed: ada@example.com is suppressed for all email: bounced at"
        " 2023-11-14T22:13:21Z, event msg_2"
    )
    assert await mail.store.list_attempts(record.id) == []  # not attempted: no attempt row
    assert (
        mail.counted(
            "relay_recipients_suppressed_total", sink="email", rule="welcome", reason="bounced"
        )
        == 1
    )
    assert (
        mail.counted("relay_deliveries_total", sink="email", rule="welcome", outcome="suppressed")
        == 1
    )


@pytest.mark.parametrize("kind", ["Transient", "Undetermined"])
async def test_a_soft_bounce_does_not_suppress(mail: Mail, kind: str) -> None:
    await mail.post("email.bounced", **bounce(kind, "ada@example.com"))
    assert await mail.store.list_suppressions() == []
    await mail.post("user.created", to="ada@example.com")
    assert mail.sent_to() == ["ada@example.com"]


@pytest.mark.parametrize("to", [" ADA@example.com ", "Ada <ada@EXAMPLE.com>", "ada@Example.Com"])
async def test_case_and_whitespace_variants_of_a_suppressed_address_are_held_back(
    mail: Mail, to: str
) -> None:
    await mail.store.add_suppression(Suppression("ada@example.com", "all", Reason.MANUAL, None, T0))
    held = await mail.post("user.created", to=to)
    assert (await mail.delivery(held)).status is DeliveryStatus.SUPPRESSED
    assert mail.sent_to() == []


async def test_a_category_suppression_holds_back_only_that_categorys_email(mail: Mail) -> None:
    """Unsubscribed from onboarding: the tips are held back, the welcome (no category) is not;
    a suppression of all email holds back both."""
    left = Suppression("ada@example.com", "onboarding", Reason.UNSUBSCRIBED, None, T0)
    await mail.store.add_suppression(left)
    tips = await mail.post("user.updated", to="ada@example.com")
    await mail.post("user.created", to="ada@example.com")
    assert mail.sent_to() == ["ada@example.com"]
    assert (await mail.delivery(tips)).last_error == (
        "suppressed: ada@example.com is suppressed for 'onboarding' email: unsubscribed at"
        " 2023-11-14T22:13:20Z"
    )
    other = Suppression("bob@example.com", "newsletter", Reason.UNSUBSCRIBED, None, T0)
    await mail.store.add_suppression(other)
    await mail.post("user.updated", to="bob@example.com")  # another category: not held back
    everything = Suppression("carol@example.com", "all", Reason.COMPLAINED, "msg_c", T0)
    await mail.store.add_suppression(everything)
    await mail.post("user.updated", to="carol@example.com")
    await mail.post("user.created", to="carol@example.com")
    assert mail.sent_to() == ["ada@example.com", "bob@example.com"]


async def test_a_suppressed_cc_is_left_out_and_the_email_goes_to_the_others(mail: Mail) -> None:
    """Only the main recipients decide whether an email goes: a suppressed cc is taken out;
    a suppressed to holds back the whole email, cc and all."""
    await mail.store.add_suppression(
        Suppression("bob@example.com", "all", Reason.BOUNCED, None, T0)
    )
    sent = await mail.post(
        "user.created", to="ada@example.com", cc="Bob <bob@example.com>, c@x.org"
    )
    assert (await mail.delivery(sent)).status is DeliveryStatus.DELIVERED
    [message] = mail.email.messages
    assert (message.payload["to"], message.payload["cc"]) == (["ada@example.com"], ["c@x.org"])
    [attempt] = await mail.store.list_attempts((await mail.delivery(sent)).id)
    assert json.loads(attempt.rendered or "{}")["cc"] == ["c@x.org"]  # the record: what was sent
    held = await mail.post("user.created", to="bob@example.com", cc="ada@example.com")
    assert (await mail.delivery(held)).status is DeliveryStatus.SUPPRESSED
    assert len(mail.email.messages) == 1
    assert (
        mail.counted(
            "relay_recipients_suppressed_total", sink="email", rule="welcome", reason="bounced"
        )
        == 2
    )


async def test_a_replayed_suppressed_delivery_stays_held_back_until_the_address_is_removed(
    mail: Mail,
) -> None:
    await mail.store.add_suppression(Suppression("ada@example.com", "all", Reason.MANUAL, None, T0))
    held = await mail.post("user.created", to="ada@example.com")
    record = await mail.delivery(held)
    assert await mail.store.replay([record.id], mail.clock(), also=[DeliveryStatus.SUPPRESSED])
    await mail.worker.tick()
    await mail.worker.drain()
    assert (await mail.delivery(held)).status is DeliveryStatus.SUPPRESSED
    assert mail.sent_to() == []
    assert await mail.store.remove_suppressions("ada@example.com") == 1
    assert await mail.store.replay([record.id], mail.clock(), also=[DeliveryStatus.SUPPRESSED])
    await mail.worker.tick()
    await mail.worker.drain()
    assert (await mail.delivery(held)).status is DeliveryStatus.DELIVERED
    assert mail.sent_to() == ["ada@example.com"]


async def test_an_email_of_a_category_carries_its_one_click_link(mail: Mail) -> None:
    """The tips go out with List-Unsubscribe and List-Unsubscribe-Post, and the link in the text
    is the header's; the welcome (no category) has neither."""
    await mail.post("user.updated", to="Ada <ada@example.com>")
    await mail.post("user.created", to="ada@example.com")
    tips, welcome = (m.payload for m in mail.email.messages)
    link = tips["headers"]["List-Unsubscribe"].strip("<>")
    assert tips["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith("https://relay.acme.example/unsubscribe/")
    assert tips["text"] == f"Tips. No more: {link}"
    assert mail.config.unsubscribe is not None
    assert mail.config.unsubscribe.read(link.rsplit("/", 1)[1]) == ("ada@example.com", "onboarding")
    assert "headers" not in welcome


async def test_an_email_of_a_category_to_two_addresses_is_dead_with_the_reason(mail: Mail) -> None:
    """Its link would let each unsubscribe the other: nothing is sent, and it says why."""
    dead = await mail.post("user.updated", to="ada@example.com, bob@example.com")
    record = await mail.delivery(dead)
    assert record.status is DeliveryStatus.DEAD
    assert record.last_error == (
        "message: unsubscribe: onboarding: an email with a one-click unsubscribe link goes to"
        " exactly one address (its link unsubscribes that address); to, cc and bcc hold 2"
    )
    assert mail.sent_to() == []
