"""End-to-end fixtures: a fake upstream, the harness project on it, and the relay processes a test
starts (all stopped at its end, their logs printed if it failed). The machinery is in harness.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    E2EProject,
    Fleet,
    RelayProcess,
    make_project,
)
from tests.e2e.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def e2e_project(tmp_path: Path, upstream: FakeUpstream) -> E2EProject:
    return make_project(tmp_path / "project", upstream)


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """The relays of this test: all stopped at teardown, their logs printed only if it failed."""
    failed_before = request.session.testsfailed
    relays = Fleet()
    try:
        yield relays
    finally:
        # the call phase's report is counted before teardown: print the logs only for a failure
        relays.close(show_logs=request.session.testsfailed > failed_before)


@pytest.fixture
def relays(fleet: Fleet) -> list[RelayProcess]:
    """The fleet's processes: a relay a test starts itself and appends here is stopped too."""
    return fleet.relays


@pytest.fixture
def start_relay(e2e_project: E2EProject, fleet: Fleet) -> Callable[[], RelayProcess]:
    """Start a `relay serve` on the test project (again: same store, new port) and wait ready."""
    return lambda: fleet.start(e2e_project)


@pytest.fixture
def relay(start_relay: Callable[[], RelayProcess]) -> RelayProcess:
    return start_relay()
