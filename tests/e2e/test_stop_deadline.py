"""Docker's stop deadline: `docker stop` sends SIGTERM and kills the container 10 s later. With
its default grace, a relay whose attempt hangs and whose client stalls mid-request still exits on
its own before that."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.e2e.harness import (
    MEMBERSHIP_PATH,
    SOURCE_PATH,
    E2EProject,
    Fleet,
    with_env,
)
from tests.e2e.upstream import Answer, FakeUpstream

pytestmark = pytest.mark.e2e
DOCKER_STOP_TIMEOUT_S = 10.0


def test_sigterm_with_the_default_grace_exits_before_dockers_kill(
    e2e_project: E2EProject, upstream: FakeUpstream, fleet: Fleet
) -> None:
    """RELAY_SHUTDOWN_GRACE_S unset (8 s); the HTTP sink's upstream takes 30 s to answer and a
    client has sent half a webhook: SIGTERM, and the relay is gone with time to spare before
    Docker's SIGKILL at 10 s, its shutdown complete."""
    project = with_env(e2e_project, RELAY_SHUTDOWN_GRACE_S="")
    upstream.script(MEMBERSHIP_PATH, [Answer(200, delay_s=30)])
    relay = fleet.start(project)
    assert relay.post(project.sample("organizationMembership.created.json")).status_code == 200
    upstream.wait_for(MEMBERSHIP_PATH, 1)
    with socket.create_connection(("127.0.0.1", relay.port)) as stalled:
        stalled.sendall(
            f"POST {SOURCE_PATH} HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        took_s = relay.terminate(timeout_s=DOCKER_STOP_TIMEOUT_S)
    print(f"\nSIGTERM with the default grace: exited in {took_s:.1f} s")
    assert relay.proc is not None
    assert relay.proc.returncode in (0, -signal.SIGTERM)
    assert took_s < DOCKER_STOP_TIMEOUT_S - 1
    assert "relay stopped" in relay.log()
