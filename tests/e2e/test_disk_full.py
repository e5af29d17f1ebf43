"""A full disk under a real `relay serve` (its SQLite store on a 32 MiB tmpfs, filled by another
file): delivery goes on, /readyz says why the relay is not ready, and ingest comes back as soon
as there is room, without a restart."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.fault_rules import event, http_sink, new_project, rule_for
from tests.e2e.harness import Fleet, StoreView, wait_until
from tests.e2e.upstream import FakeUpstream

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of the test's own (root mounts it). Where that is impossible the test is
    skipped, except under CI=true, where it fails: it must run there."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the disk is full; returns how many bytes it took."""
    written = 0
    with path.open("ab") as file, contextlib.suppress(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()
            written += 65536
    return written


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_a_full_disk_stops_ingest_not_delivery_and_room_brings_it_back(
    small_disk: Path, upstream: FakeUpstream, fleet: Fleet, tmp_path: Path
) -> None:
    """30 deliveries wait on a failing receiver; the disk fills up. Posts get 503 and /readyz
    is 503 naming the full disk (it said ready before); the receiver recovers and all 30 are
    delivered and recorded on the full disk. Freeing about 1.5 MiB makes /readyz ready and
    posts accepted again, within seconds, with no restart."""
    rules = f"version: 1\nsinks:\n{http_sink('hook', upstream.url + '/hook')}rules:\n"
    rules += rule_for("hook")
    project = new_project(
        tmp_path, upstream, rules, RELAY_DATABASE_URL=f"sqlite:///{small_disk / 'relay.db'}"
    )
    db = StoreView(small_disk / "relay.db")
    upstream.always("/hook", 503)
    relay = fleet.start(project)
    for n in range(30):
        assert relay.post(event("fault.hook", n)).status_code == 200

    fill(small_disk / "filler-1")
    statuses = [relay.post(event("fault.hook", 100 + n)).status_code for n in range(3)]
    fill(small_disk / "filler-2")  # what the relay gave back when it filled up is taken too
    refused = [relay.post(event("fault.hook", 200 + n)).status_code for n in range(5)]
    ready = httpx.get(relay.url + "/readyz", timeout=10)
    print(f"\nfull disk: posts {statuses} then {refused}; /readyz {ready.status_code} {ready.text}")
    assert refused == [503] * 5
    assert ready.status_code == 503
    assert "is full" in ready.json()["failing"]["store"]["error"]

    upstream.always("/hook", 200)
    rows = db.wait(
        lambda rows: sum(r["status"] == "delivered" for r in rows) >= 30,
        timeout_s=30,
        what="the 30 waiting deliveries delivered and recorded on the full disk",
    )
    assert free_bytes(small_disk) < 512 * 1024
    stored = len(rows)

    os.unlink(small_disk / "filler-2")
    os.truncate(small_disk / "filler-1", max(0, (small_disk / "filler-1").stat().st_size - 2**20))
    wait_until(
        "/readyz ready once there is room",
        lambda: httpx.get(relay.url + "/readyz", timeout=10).status_code == 200,
        timeout_s=10,
    )
    accepted = [relay.post(event("fault.hook", 300 + n)).status_code for n in range(20)]
    assert accepted == [200] * 20
    assert len(db.wait_idle(timeout_s=30)) == stored + 20
