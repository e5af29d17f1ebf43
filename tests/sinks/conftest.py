"""The sinks' fixtures: an empty database for the sql sink, on each backend.

PostgreSQL tests use RELAY_TEST_POSTGRES_URL (default: the local server's ``test`` database), each
in a fresh schema of its own, dropped after. Without a reachable server they skip, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sinks.sql_example import Database, postgres_database, sqlite_database


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty database with the example schema, on each backend."""
    if request.param == "sqlite":
        return sqlite_database(tmp_path / "app.db")
    return postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def bare_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty database without the example schema (no tables), on each backend."""
    if request.param == "sqlite":
        return sqlite_database(tmp_path / "app.db", schema=False)
    return postgres_database(request.getfixturevalue("postgres_url"), schema=False)
