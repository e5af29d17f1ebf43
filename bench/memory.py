"""Memory: peak RSS of `relay serve` over a backlog of 100,000 pending deliveries.

Phases, each a fresh `relay serve` (ingest + worker) pinned to CPU 0, sampled every 100 ms
(/proc/PID/status: VmRSS, and VmHWM, the kernel's own peak) while /readyz is polled every 2 s
(it runs the store's queue statistics over the whole backlog):

  idle      an empty database: the baseline footprint of a started relay
  stalled   100k pending deliveries to a sink that answers only after 60 s, so the worker keeps
            its `concurrency` deliveries in flight and the rest of the backlog stays pending
  draining  the same backlog to a sink answering at once: the worker claims and delivers as
            fast as it can for the whole phase

Target: peak RSS with 100k pending deliveries <= 150 MB. Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/memory.py                # 100k pending, 20 s per backlog phase
    .venv/bin/python bench/memory.py --pending 20000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _backlog import count_rows, create_schema, fill_backlog
from _fixtures import new_secret, relay_env, write_rules
from _meters import proc_status_kb
from _procs import (
    BENCH,
    HOST,
    LOAD_CPU,
    RELAY_BIN,
    SERVER_CPU,
    Proc,
    free_port,
    http_get_json,
    pin_self,
    wait_http,
    workdir,
)
from _report import describe_relay, fmt_table

TARGET_MB = 150.0


@dataclass
class Phase:
    name: str
    seconds: float
    start_mb: float  # RSS once ready
    peak_mb: float  # max(VmHWM, sampled VmRSS)
    end_mb: float
    delivered: int
    readyz_ms: float  # slowest /readyz answer
    note: str = ""


def run_phase(
    name: str,
    tmp: Path,
    db: Path,
    secret: str,
    sink_port: int,
    seconds: float,
    concurrency: int,
    variant: str = "",
) -> Phase:
    rules, templates = write_rules(
        tmp,
        sink_url=f"http://{HOST}:{sink_port}/hook",
        concurrency=concurrency,
        timeout_s=120.0,  # the stalled sink's answers must not time out during the phase
    )
    env = relay_env(db, secret, rules, templates)
    env["RELAY_SHUTDOWN_GRACE_S"] = "1"
    port = free_port()
    argv = [str(RELAY_BIN), "serve", "--port", str(port)]
    if variant:  # an experiment of bench/relay_variants.py
        argv = [sys.executable, str(BENCH / "relay_variants.py"), variant, "--port", str(port)]
    proc = Proc(f"relay ({name})", argv, cpu=SERVER_CPU, log_path=tmp / f"{name}.log", env=env)
    delivered_before = count_rows(db, "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'")
    try:
        wait_http(proc, port)
        start_mb = proc_status_kb(proc.pid)["VmRSS"] / 1024
        peak_kb = 0
        readyz_ms = 0.0
        t_end = time.monotonic() + seconds
        next_probe = time.monotonic()
        while time.monotonic() < t_end:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            status = proc_status_kb(proc.pid)
            peak_kb = max(peak_kb, status["VmRSS"], status.get("VmHWM", 0))
            if time.monotonic() >= next_probe:
                t0 = time.perf_counter()
                http_get_json(port, "/readyz")
                readyz_ms = max(readyz_ms, (time.perf_counter() - t0) * 1000)
                next_probe += 2.0
            time.sleep(0.1)
        status = proc_status_kb(proc.pid)
        peak_kb = max(peak_kb, status["VmRSS"], status.get("VmHWM", 0))
        end_mb = status["VmRSS"] / 1024
    finally:
        proc.stop(grace_s=15.0)
    delivered = (
        count_rows(db, "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'")
        - delivered_before
    )
    return Phase(name, seconds, start_mb, peak_kb / 1024, end_mb, delivered, readyz_ms)


def start_sink(tmp: Path, delay_s: float) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, str(BENCH / "fake_sink.py"), "--port", str(port)]
    argv += ["--delay", str(delay_s)]
    sink = Proc(f"sink (delay {delay_s})", argv, cpu=LOAD_CPU, log_path=tmp / f"sink{port}.log")
    wait_http(sink, port)
    return sink, port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, default=100_000, help="backlog size (100000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per backlog phase (20)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle phase (5)")
    parser.add_argument("--concurrency", type=int, default=32, help="sink concurrency (32)")
    parser.add_argument("--phases", default="idle,stalled,draining")
    parser.add_argument("--variant", default="", help="run bench/relay_variants.py VARIANT")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.pending <= 1_000_000 or not 1 <= args.seconds <= 300:
        parser.error("--pending must be 1..1000000 and --seconds 1..300")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    pin_self(LOAD_CPU)
    print(
        f"memory bench: {args.pending} pending deliveries, {args.seconds:.0f} s per backlog "
        f"phase; relay on CPU {SERVER_CPU}, sinks and sampling on CPU {LOAD_CPU}"
    )
    print(describe_relay())
    secret = new_secret()
    results: list[Phase] = []
    with workdir(keep=args.keep) as tmp:
        _, slow_port = start_sink(tmp, 60.0)
        _, fast_port = start_sink(tmp, 0.0)
        if "idle" in phases:
            print("- idle (empty database) ...", flush=True)
            empty = tmp / "empty.db"
            create_schema(empty)
            results.append(
                run_phase(
                    "idle",
                    tmp,
                    empty,
                    secret,
                    slow_port,
                    args.idle_seconds,
                    args.concurrency,
                    args.variant,
                )
            )
        db = tmp / "backlog.db"
        if {"stalled", "draining"} & set(phases):
            took = fill_backlog(db, args.pending)
            size_mb = sum(p.stat().st_size for p in tmp.glob("backlog.db*")) / 2**20
            print(
                f"backlog: {args.pending} pending deliveries written in {took:.1f} s "
                f"({size_mb:.0f} MB on disk)"
            )
        for name, port in (("stalled", slow_port), ("draining", fast_port)):
            if name in phases:
                print(f"- {name} ...", flush=True)
                results.append(
                    run_phase(
                        name, tmp, db, secret, port, args.seconds, args.concurrency, args.variant
                    )
                )
    print()
    rows = [
        (
            p.name,
            f"{p.seconds:.0f}",
            f"{p.start_mb:.1f}",
            f"{p.peak_mb:.1f}",
            f"{p.end_mb:.1f}",
            p.delivered,
            f"{p.readyz_ms:.0f}",
        )
        for p in results
    ]
    print(
        fmt_table(
            [
                "phase",
                "s",
                "RSS ready MB",
                "peak RSS MB",
                "RSS end MB",
                "delivered",
                "slowest /readyz ms",
            ],
            rows,
        )
    )
    backlog = [p for p in results if p.name != "idle"]
    if backlog:
        peak = max(p.peak_mb for p in backlog)
        verdict = "meets" if peak <= TARGET_MB else "misses"
        print(
            f"\npeak RSS with {args.pending} pending deliveries: {peak:.1f} MB "
            f"({verdict} the <= {TARGET_MB:.0f} MB target)"
        )
    if args.json:
        args.json.write_text(json.dumps([p.__dict__ for p in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
