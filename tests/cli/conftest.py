"""The CLI fixtures: a SQLite file holding a small, known delivery log."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import SQLiteStore
from tests.cli.helpers import T0, at_store, ingest, tried


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A welcome email that died after three attempts and its delivered Slack alert, a
    user.deleted that matched no rule, and a membership sync waiting for its retry."""
    path = tmp_path / "relay.db"

    async def seed(store: SQLiteStore) -> None:
        sends = [("welcome-email", "email"), ("signup-alert", "slack-signups")]
        await ingest(store, 1, "user.created", T0, sends)
        await store.record_retry(tried("dlv_1a", T0 + 1, 250, 500, "resend: 500 oops"), T0 + 6)
        await store.record_retry(tried("dlv_1a", T0 + 6, 300.4, 503, "resend: 503 busy"), T0 + 30)
        bad = "resend: 422 invalid `to` field"
        await store.record_dead(tried("dlv_1a", T0 + 30, 120, 422, bad), "dlv_1a", f"perm: {bad}")
        await store.record_delivered(tried("dlv_1b", T0 + 1, 80, 200, None))
        await ingest(store, 2, "user.deleted", T0 + 60, [])
        await ingest(store, 3, "organizationMembership.created", T0 + 120, [("sync", "hook")])
        await store.record_retry(tried("dlv_3a", T0 + 121, 10000, None, "timed out"), T0 + 300)

    at_store(path, seed)
    return path
