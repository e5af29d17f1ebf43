"""A real `relay serve` with the shipped Resend example and a Klaviyo source."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from relay.secret import Secret
from relay.sources.signing import sign as svix_sign
from tests.conftest import ROOT, TEST_SECRET
from tests.e2e.harness import (
    SLACK_PATH,
    E2EProject,
    RelayProcess,
)
from tests.e2e.upstream import FakeUpstream
from tests.sources.helpers import (
    EXAMPLE,
    KLAVIYO_BATCH,
    KLAVIYO_SECRET,
    klaviyo_headers,
    svix_headers,
)


@pytest.mark.e2e
def test_serve_resend_bounce_to_slack_and_klaviyo_batches(tmp_path: Path) -> None:
    """A real relay: a signed Resend bounce becomes a Slack alert naming the address; a Klaviyo
    batch is three events, and its replay stores nothing new."""
    rules = (EXAMPLE / "rules.yaml").read_text(encoding="utf-8")
    rules = rules.replace("${SLACK_EMAIL_ALERTS_WEBHOOK_URL}", "${SLACK_WEBHOOK_URL}")
    rules = rules.replace(
        "sinks:", "  klaviyo:\n    path: /webhooks/klaviyo\n    verify: klaviyo\n"
        "    secret: ${KLAVIYO_SECRET}\n\nsinks:", 1
    )  # fmt: skip

    with FakeUpstream() as upstream:
        root = tmp_path / "project"
        (root / "templates").mkdir(parents=True)
        for template in ("email-bounce-alert.yaml",):
            (root / "templates" / template).write_text((ROOT / "templates" / template).read_text())
        (root / "rules.yaml").write_text(rules, encoding="utf-8")
        secrets = {"RESEND_WEBHOOK_SECRET": TEST_SECRET, "KLAVIYO_SECRET": KLAVIYO_SECRET}
        project = E2EProject(root, upstream, extra_env=secrets)
        relay = RelayProcess(project).start()
        try:
            bounce = (EXAMPLE / "samples" / "email.bounced.json").read_bytes()
            now = int(time.time())
            headers = svix_headers(
                "msg_bounce_1", now, svix_sign(Secret(TEST_SECRET), "msg_bounce_1", now, bounce)
            )
            response = httpx.post(relay.url + "/webhooks/resend", content=bounce, headers=headers)
            assert response.json()["status"] == "accepted"
            [alert] = upstream.wait_for(SLACK_PATH, 1)
            assert alert.json["text"] == "Email bounced: ada@example.com (Welcome to Acme, Ada!)"

            ts = str(now)
            for expected in [(3, 0), (0, 3)]:
                answer = httpx.post(
                    relay.url + "/webhooks/klaviyo",
                    content=KLAVIYO_BATCH,
                    headers=klaviyo_headers(ts=ts),
                ).json()
                assert (answer["events"], answer["duplicates"]) == expected
            stored = project.db.events()
            assert sorted(e["message_id"] for e in stored if e["source"] == "klaviyo") == [
                "7Xk2aQ",
                "7Xk2aR",
                "7Xk2aS",
            ]
        finally:
            relay.stop()
