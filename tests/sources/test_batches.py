"""Ingest of batches: each event stored on its own, deduplicated, routed; a store failure mid-batch
is a 503 whose retry completes it; single-event sources keep their answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.secret import Secret
from relay.sources.signing import sign as svix_sign
from tests.conftest import TEST_SECRET
from tests.sources.helpers import (
    CLERK_EVENT,
    ENV,
    KLAVIYO_BATCH,
    KLAVIYO_TOPICS,
    KLAVIYO_TS,
    NOW,
    ORDER,
    klaviyo_headers,
    mac,
    running,
    svix_headers,
)


@pytest.mark.anyio
async def test_klaviyo_batch_routes_each_event_and_replay_is_deduplicated(tmp_path: Path) -> None:
    """A Klaviyo batch of three stores three events routed to three rules; the same batch again
    stores nothing new (duplicates: 3); a batch with one new item stores just that one."""
    async with running(tmp_path, int(KLAVIYO_TS)) as relay:
        response = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert response.status_code == 200
        assert response.json() == {
            "status": "accepted",
            "events": 3,
            "duplicates": 0,
            "deliveries": 3,
        }
        assert relay.events() == [
            ("klaviyo", f"7Xk2a{c}", t) for c, t in zip("QRS", KLAVIYO_TOPICS, strict=True)
        ]
        assert relay.routed() == [("7Xk2aQ", "received"), ("7Xk2aR", "clicked"), ("7Xk2aS", "spam")]
        stored = relay.rows("SELECT body FROM events WHERE message_id = '7Xk2aQ'")[0][0]
        assert json.loads(stored)["data"]["data"]["id"] == "7Xk2aQ"

        again = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert again.json() == {"status": "accepted", "events": 0, "duplicates": 3, "deliveries": 0}
        assert len(relay.events()) == 3
        assert len(relay.routed()) == 3

        doc = json.loads(KLAVIYO_BATCH)
        doc["data"][1] = {**doc["data"][1], "external_id": "7Xk2aT"}
        body = json.dumps(doc).encode()
        mixed = await relay.post("/webhooks/klaviyo", body, klaviyo_headers(body=body))
        assert mixed.json() == {"status": "accepted", "events": 1, "duplicates": 2, "deliveries": 1}
        assert ("7Xk2aT", "clicked") in relay.routed()


@pytest.mark.anyio
async def test_a_store_failure_mid_batch_is_503_and_the_retry_completes_it(tmp_path: Path) -> None:
    """If the second event cannot be committed the answer is 503 (the sender retries); the retry
    finds the first as a duplicate and stores the rest."""
    async with running(tmp_path, int(KLAVIYO_TS)) as relay:
        relay.store.fail_at = 2
        response = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert (response.status_code, response.json()) == (
            503,
            {"status": "store_unavailable", "retry": True},
        )
        assert [e[1] for e in relay.events()] == ["7Xk2aQ"]
        assert relay.woken == [1]  # the worker still hears of the delivery that was stored
        retry = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert retry.json() == {"status": "accepted", "events": 2, "duplicates": 1, "deliveries": 2}
        assert len(relay.routed()) == 3


@pytest.mark.anyio
async def test_single_event_sources_keep_the_single_event_answer(tmp_path: Path) -> None:
    """svix, standard-webhooks and hmac requests are one event: accepted with its event_id, then
    "duplicate" on a retry; a bad request to any source is a 400 with the reason."""
    async with running(tmp_path, NOW) as relay:
        clerk = svix_headers(
            "msg_a", NOW, svix_sign(Secret(TEST_SECRET), "msg_a", NOW, CLERK_EVENT)
        )
        partner_secret = Secret(ENV["PARTNER_SECRET"])
        partner = svix_headers(
            "msg_b", NOW, svix_sign(partner_secret, "msg_b", NOW, CLERK_EVENT), "webhook"
        )
        shop = {
            "X-Shop-Hmac": mac(ENV["SHOP_SECRET"], ORDER, "base64"),
            "X-Shop-Webhook-Id": "wh_1",
            "X-Shop-Topic": "orders/paid",
        }
        for path, body, headers, deliveries in [
            ("/webhooks/clerk", CLERK_EVENT, clerk, 1),
            ("/webhooks/partner", CLERK_EVENT, partner, 1),
            ("/webhooks/shop", ORDER, shop, 0),
        ]:
            first = await relay.post(path, body, headers)
            assert first.status_code == 200
            assert set(first.json()) == {"status", "event_id", "deliveries"}
            assert first.json()["deliveries"] == deliveries
            assert (await relay.post(path, body, headers)).json() == {"status": "duplicate"}
        assert relay.events() == [
            ("clerk", "msg_a", "user.created"),
            ("partner", "msg_b", "user.created"),
            ("shop", "wh_1", "orders/paid"),
        ]
        bad = await relay.post("/webhooks/partner", CLERK_EVENT, clerk)
        assert bad.json() == {"status": "rejected", "reason": "missing webhook-id header"}
        nojson = b"{"
        shop_bad = {**shop, "X-Shop-Hmac": mac(ENV["SHOP_SECRET"], nojson, "base64")}
        response = await relay.post("/webhooks/shop", nojson, shop_bad)
        assert (response.status_code, response.json()["reason"]) == (400, "body is not valid JSON")
        klaviyo_bad = await relay.post("/webhooks/klaviyo", KLAVIYO_BATCH, klaviyo_headers())
        assert klaviyo_bad.status_code == 400  # a day-old Unix timestamp
        assert klaviyo_bad.json()["reason"] == "timestamp too old"
