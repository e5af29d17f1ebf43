"""The worker fixtures: the test rules.yaml loaded, harnesses on the test's SQLite store, and a
store on each backend (``any_store``) for the tests that run on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.store import SQLiteStore, Store
from relay.store.postgres import PostgresStore
from tests.delivery.worker_harness import ENV, Harness, harness_on, write_project
from tests.store.helpers import BACKENDS


@pytest.fixture
def config(tmp_path: Path) -> Config:
    rules, templates = write_project(tmp_path / "project")
    return load_config(rules, templates, env=ENV)


@pytest.fixture
def make_harness(store: SQLiteStore, config: Config) -> Callable[..., Harness]:
    return harness_on(store, config)


@pytest.fixture(params=BACKENDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store on each backend in turn: SQLite, then PostgreSQL."""
    opened: Store = (
        SQLiteStore(tmp_path / "relay.db")
        if request.param == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres_url"), max_size=4)
    )
    await opened.open()
    yield opened
    await opened.close()
