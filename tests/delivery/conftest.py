"""The worker fixtures: the test rules.yaml loaded, and harnesses on the test's SQLite store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.store import SQLiteStore
from tests.delivery.worker_harness import ENV, Harness, harness_on, write_project


@pytest.fixture
def config(tmp_path: Path) -> Config:
    rules, templates = write_project(tmp_path / "project")
    return load_config(rules, templates, env=ENV)


@pytest.fixture
def make_harness(store: SQLiteStore, config: Config) -> Callable[..., Harness]:
    return harness_on(store, config)
