"""Shared fixtures: a copy of the shipped project (rules, templates, samples) with test env."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from relay.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
CLERK_EVENTS = ROOT / "tests" / "fixtures" / "clerk-events"

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEST_ENV = {
    "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET,
    "RESEND_API_KEY": "re_test_key_1234567890",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/slacksecrettoken",
    "MEMBERSHIP_SYNC_URL": "http://127.0.0.1:9/membership",
    # the one-click unsubscribe links of examples/onboarding (relay.config.unsubscribe)
    "RELAY_UNSUBSCRIBE_SECRET": "test-unsubscribe-secret-9f8e7d6c5b4a3210fedcba",
    "RELAY_PUBLIC_URL": "https://relay.acme.example",
}


POSTGRES_URL = os.environ.get(
    "RELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Project:
    root: Path

    @property
    def rules(self) -> Path:
        return self.root / "rules.yaml"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def edit_rules(self, old: str, new: str) -> None:
        text = self.rules.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in rules.yaml"
        self.rules.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A writable copy of the shipped rules.yaml, templates/ and samples/."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "rules.yaml", root / "rules.yaml")
    shutil.copytree(ROOT / "templates", root / "templates")
    shutil.copytree(ROOT / "samples", root / "samples")
    return Project(root)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store in a file of the test's own (tests/store/conftest.py overrides this
    to run its tests on every backend)."""
    opened = SQLiteStore(tmp_path / "relay.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty schema (as its search_path) in the test database, dropped after.

    No server there: a skip that says so, or a failure under CI=true (CI must run them)."""
    import psycopg
    from psycopg import sql

    from relay.store import redact_url

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = (
            f"PostgreSQL not reachable at {redact_url(POSTGRES_URL)}: {' '.join(str(exc).split())}"
            "; set RELAY_TEST_POSTGRES_URL"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(reason)
    schema = sql.Identifier(f"relay_test_{uuid.uuid4().hex[:16]}")
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            options = quote(f"-csearch_path={schema.as_string(admin)}", safe="")
            yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options={options}"
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
