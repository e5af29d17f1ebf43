"""What the output says: tables, percentiles, CPU figures, what is measured and on what disk,
and relay's own group commits (from its /metrics)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from _procs import HOST, REPO


class _HasRate(Protocol):
    @property
    def rate(self) -> float: ...


_Rated = TypeVar("_Rated", bound=_HasRate)


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` (0..1) percentile by nearest rank of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def median_by_rate(results: Sequence[_Rated]) -> _Rated:
    """The run with the median throughput (the upper one of an even count)."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def cpus_text(cpus: Sequence[float]) -> str:
    """CPU of the processes under test: one figure, or each one's and their sum."""
    if len(cpus) == 1:
        return f"{100 * cpus[0]:.0f}%"
    return "+".join(f"{100 * x:.0f}" for x in cpus) + f"={100 * sum(cpus):.0f}%"


def commit_latency_ms(folder: Path, commits: int = 100) -> tuple[float, float]:
    """(median, p90) milliseconds of one small SQLite commit (WAL, synchronous=FULL) in
    ``folder``: the disk's fsync cost, which bounds any commit-per-request design."""
    path = folder / "fsync-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (x BLOB)")
        times = []
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(2048),))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.9)


def describe_relay() -> str:
    """Which relay code is measured: its folder and, if it is this checkout, commit and state."""
    import relay

    where = Path(relay.__file__).resolve().parent
    text = f"relay from {where}"
    if where.parent == REPO:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "relay"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        text += f" at {head or '?'}" + (" + uncommitted changes in relay/" if dirty else "")
    return text


def commit_stats(port: int) -> dict[str, float]:
    """relay's ingest group commits so far, from its /metrics: how many, their writes and
    seconds, and how many took at most 10 ms."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10).text
    names = {
        "relay_store_commit_seconds_count": "count",
        "relay_store_commit_seconds_sum": "seconds",
        "relay_store_commit_writes_sum": "writes",
    }
    stats = dict.fromkeys(["count", "seconds", "writes", "within_10ms"], 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") != "ingest":
                continue
            if sample.name in names:
                stats[names[sample.name]] += sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "0.01":
                stats["within_10ms"] += sample.value
    return stats


def commit_text(after: list[dict[str, float]], before: list[dict[str, float]]) -> str:
    """The commits between two ``commit_stats`` readings of each replica, in one line."""
    diff = {
        key: sum(a[key] - b[key] for a, b in zip(after, before, strict=True)) for key in after[0]
    }
    n = diff["count"]
    if not n:
        return "group commits: none"
    return (
        f"group commits: {n:,.0f} of {diff['writes'] / n:.1f} events on average, "
        f"{1000 * diff['seconds'] / n:.2f} ms each on average, {n - diff['within_10ms']:,.0f} "
        "over 10 ms (relay_store_commit_seconds)"
    )
