"""Ingest with workflow rules (examples/onboarding): what each event's commit decided is in its
log line and in /metrics — the sends scheduled, cancelled, suppressed and digested — and a key
that does not render is a warning that loses nothing."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from relay.config import load_config
from relay.ingest import IngestEndpoint
from relay.metrics import Metrics
from relay.secret import Secret
from relay.sources.signing import sign
from relay.store.sqlite import SQLiteStore
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET
from tests.test_ingest import call, chunks

pytestmark = pytest.mark.anyio
EXAMPLE = ROOT / "examples" / "onboarding"
T0 = 1_774_629_000.0  # Friday 27 March 2026, 16:30 UTC


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EXAMPLE / "samples" / name).read_text("utf-8"))
    return event


@pytest.fixture
async def endpoint(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    config = load_config(EXAMPLE / "rules.yaml", ROOT / "templates", env=TEST_ENV)
    yield IngestEndpoint(lambda: config, store, lambda: T0, metrics=Metrics())
    await store.close()


async def post(endpoint: IngestEndpoint, msg_id: str, event: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(event).encode()
    at = int(T0)  # signed at the endpoint's clock
    headers = [
        (b"svix-id", msg_id.encode()),
        (b"svix-timestamp", str(at).encode()),
        (b"svix-signature", sign(Secret(TEST_SECRET), msg_id, at, body).encode()),
    ]
    status, answer = await call(endpoint, "/webhooks/clerk", headers, chunks(body, 1 << 20))
    assert status == 200, answer
    return answer


def accepted(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The fields of the last "event accepted" line."""
    (*_, record) = [r for r in caplog.records if r.getMessage() == "event accepted"]
    fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
    return fields


def sample_value(endpoint: IngestEndpoint, name: str, **labels: str) -> float:
    return endpoint.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_each_event_says_what_its_workflow_did(
    endpoint: IngestEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """A sign-up: one send scheduled (the tips), the digest led; the same address again: held
    back (once), the digest joined; the user deleted: the unsent welcome and tips cancelled.
    The log says so and /metrics counts it."""
    caplog.set_level(logging.INFO, "relay.ingest")
    answer = await post(endpoint, "msg_1", sample("user.created.json"))
    assert answer["deliveries"] == 3
    first = accepted(caplog)
    assert (first["scheduled"], first["next_due_at"]) == (1, T0 + 3 * 86400 + 14.5 * 3600)
    assert [d["outcome"] for d in first["digests"]] == ["lead"]

    again = copy.deepcopy(sample("user.created.json"))
    again["data"]["id"] = "user_again"
    await post(endpoint, "msg_2", again)
    second = accepted(caplog)
    assert second["suppressed"] == ["onboarding: once: already sent for key 'ada@example.com'"]
    assert [d["outcome"] for d in second["digests"]] == ["joined"]

    await post(endpoint, "msg_3", sample("user.deleted.json"))
    third = accepted(caplog)  # no worker ran: the welcome was not sent either
    assert len(third["cancelled"]) == 2
    assert third["in_flight"] == []

    def count(outcome: str) -> float:
        return sample_value(
            endpoint, "relay_deliveries_total", sink="email", rule="onboarding", outcome=outcome
        )

    assert (count("suppressed"), count("cancelled")) == (2, 2)
    scheduled = sample_value(
        endpoint, "relay_deliveries_scheduled_total", sink="email", rule="onboarding"
    )
    assert scheduled == 1
    for outcome, n in (("lead", 1), ("joined", 1)):
        assert (
            sample_value(
                endpoint, "relay_digest_events_total", rule="signup-digest", outcome=outcome
            )
            == n
        )


async def test_a_key_that_does_not_render_is_a_warning_and_the_event_is_stored(
    endpoint: IngestEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """A user.created without an id has no cancel key: its sends are stored all the same (they
    cannot be cancelled), and the line is a warning saying why."""
    caplog.set_level(logging.INFO, "relay.ingest")
    event = copy.deepcopy(sample("user.created.json"))
    del event["data"]["id"]
    answer = await post(endpoint, "msg_1", event)
    assert answer["deliveries"] == 3
    (record,) = [r for r in caplog.records if r.getMessage() == "event accepted"]
    assert record.levelno == logging.WARNING
    assert record.fields["problems"] == [  # type: ignore[attr-defined]
        "rule onboarding: cancel key did not render: undefined variable: 'dict object' has no"
        " attribute 'id'"
    ]
