"""The store fixtures: every test that takes ``store`` or ``make_store`` runs on every backend
(add a param to ``make_store`` for a new one).

PostgreSQL tests use RELAY_TEST_POSTGRES_URL (default: the local server's ``test`` database), each
in a fresh schema of its own. Without a reachable server they skip, except under CI=true, where
that is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay.store import SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.store.helpers import BACKENDS


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of unopened stores that all share one database (each is a replica of its own:
    SQLite connection, or PostgreSQL pool)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "relay.db")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url, max_size=4)
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()
