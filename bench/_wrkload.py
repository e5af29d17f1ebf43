"""The ingest load generator in C: wrk, one process per server port, distinct pre-signed events.

``run_wrk_load`` is what ``bench/ingest.py`` drives every target with by default. For each port
(one per replica) it warms up with a short wrk run of its own events, sizes the timed run's
script from the warm-up's rate (rate x seconds x 1.5, so the script never wraps: a wrapped
script would resend events already stored, and deduplication would answer them for free), then
runs one wrk per port at once, its share of the connections each, pinned like every load
generator here. The meters (server, wrk, PostgreSQL, machine) start once the servers' CPU shows
the load has begun (wrk first parses its script, which can take a fraction of a second) and
stop when the last wrk exits (read before it is reaped, so its CPU time is still there).

Latency percentiles with several wrk processes: the highest of theirs (one wrk: its own).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _wrk
from _load import make_requests
from _meters import Meters, cpu_seconds
from _procs import HOST

SLACK = 1.5  # timed script = warm-up rate x seconds x SLACK events


@dataclass
class WrkTally:
    """What the timed phase saw, summed over the wrk processes."""

    requests: int
    rate: float  # requests/s, as wrk counts them
    percentiles: dict[int, float]  # percentile -> ms (the highest of the wrk processes)
    errors: int
    wrapped: int  # times a script started over (should be 0)
    kinds: Counter[str] = field(default_factory=Counter)
    warmup_requests: int = 0


def _split(connections: int, parts: int) -> list[int]:
    """``connections`` spread over ``parts`` wrk processes as evenly as possible."""
    return [connections // parts + (i < connections % parts) for i in range(parts)]


def _script(tmp: Path, name: str, count: int, secret: str, port: int, tag: str) -> Path:
    requests = make_requests(count, secret, port, tag)
    return _wrk.write_script(tmp / f"{name}.lua", (r.raw for r in requests))


def _wait_started(pids: Sequence[int], timeout_s: float = 5.0) -> None:
    """Return once the servers have used 20 ms more CPU than now (the load has begun)."""
    start = sum(cpu_seconds(pid) for pid in pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(cpu_seconds(pid) for pid in pids) - start >= 0.02:
            return
        time.sleep(0.005)


def _wait_exit(proc: subprocess.Popen[str]) -> None:
    """Block until ``proc`` exits, without reaping it (its /proc entry keeps its CPU times)."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)


def run_wrk_load(
    ports: Sequence[int],
    server_pids: Sequence[int],
    secret: str,
    tag: str,
    tmp: Path,
    *,
    connections: int,
    seconds: float,
    warmup_seconds: float,
    cpu: int | None,
    pg_pids: Callable[[], set[int]] | None = None,
    during: Callable[[], None] = lambda: None,
) -> tuple[WrkTally, Meters]:
    """Warm up each port, call ``during()``, then run the timed phase; returns its tally and
    the meters read over it (the wrk processes are the meters' helpers)."""
    shares = _split(connections, len(ports))
    warm_rates, warm_requests = [], 0
    for i, (port, conns) in enumerate(zip(ports, shares, strict=True)):
        count = int(12_000 * warmup_seconds) + 100  # more than any server here answers
        script = _script(tmp, f"warm{tag}.{i}", count, secret, port, f"{tag}w{i}")
        result = _wrk.run(
            f"http://{HOST}:{port}", script, connections=conns, seconds=warmup_seconds, cpu=cpu
        )
        warm_rates.append(result.rate)
        warm_requests += result.requests
    scripts = []
    for i, (port, rate) in enumerate(zip(ports, warm_rates, strict=True)):
        count = int(max(rate, 500.0) * seconds * SLACK) + 1000
        scripts.append(_script(tmp, f"timed{tag}.{i}", count, secret, port, f"{tag}t{i}"))
    during()
    procs = [
        _wrk.start(f"http://{HOST}:{port}", script, connections=conns, seconds=seconds, cpu=cpu)
        for port, conns, script in zip(ports, shares, scripts, strict=True)
    ]
    meters = Meters(list(server_pids), [p.pid for p in procs], pg_pids)
    _wait_started(server_pids)
    meters.start()
    for proc in procs:
        _wait_exit(proc)
    meters.stop()
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()}")
        results.append(_wrk.parse(out))
    kinds: Counter[str] = Counter()
    for r in results:
        for name, count in r.socket_errors.items():
            if count:
                kinds[f"socket {name}"] += count
        if r.non_2xx:
            kinds["non-2xx answer"] += r.non_2xx
    percentiles = {
        p: max(r.latency_ms.get(p, float("nan")) for r in results) for p in _wrk.PERCENTILES
    }
    tally = WrkTally(
        requests=sum(r.requests for r in results),
        rate=sum(r.rate for r in results),
        percentiles=percentiles,
        errors=sum(r.errors for r in results),
        wrapped=sum(r.wrapped for r in results),
        kinds=kinds,
        warmup_requests=warm_requests,
    )
    return tally, meters
