"""Scheduled deliveries: does a store holding 1,000,000 deliveries due later slow relay down?

Two SQLite stores, relay's own schema: ``empty``, and ``scheduled``, filled in bulk (chunks of
one transaction each) with N user.created events (Clerk's example, ~2.2 kB each), each with one
delivery ``scheduled`` 1 to 30 days ahead and a cancel key, as an onboarding rule's day-3 email
is stored. Then, for each store, ``--repeat`` times (empty and scheduled alternating):

  ingest  `relay serve` (ingest and worker, the default deployment) pinned to CPU 0, driven by
          bench/_load.py's raw asyncio client on CPU 1 (C keep-alive connections, one signed
          user.created in flight on each); every accepted event is delivered at once to
          bench/fake_sink.py on CPU 1. events/s, p50 and p99 of the timed phase, and the
          server's peak RSS (VmHWM) over the run, /metrics fetched every 2 s meanwhile.
  claim   in this process, on the store: --claims deliveries due now are added, then the
          worker's step is timed until they are all delivered: promote_due (what has come due
          of the scheduled ones) and claim_due (32 of the sink), as the worker's tick calls
          them; the results are recorded untimed. Also queue_stats (what /metrics and /readyz
          read), timed 20 times.

Targets (issue 19): with the scheduled store, ingest throughput and the claim step's latency
within 10% of the empty store's, and relay serve's RSS <= 150 MB. Each figure is the median of
the runs, with their range; a missed target is printed as missed.

    .venv/bin/python bench/scheduled.py                   # 1,000,000 scheduled, 3 runs each
    .venv/bin/python bench/scheduled.py --scheduled 100000 --repeat 2 --events 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _backlog import DELIVERY_COLUMNS, EVENT_COLUMNS, backlog_rows, create_schema
from _fixtures import new_secret, relay_env, write_rules
from _load import make_requests, run_load
from _meters import Meters, proc_status_kb
from _procs import (
    BENCH,
    HOST,
    LOAD_CPU,
    PID_SELF,
    RELAY_BIN,
    SERVER_CPU,
    Proc,
    free_port,
    pin_self,
    wait_http,
    workdir,
)
from _report import describe_relay, fmt_table, percentile

DAY = 86400.0
CHUNK = 100_000
TARGET_RATIO = 0.90  # the scheduled store's figures within 10% of the empty store's
TARGET_MB = 150.0
INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608


def fill_scheduled(db: Path, n: int) -> float:
    """``n`` events, each with one delivery scheduled 1 to 30 days ahead (spread evenly) and a
    cancel key, in chunks of one transaction; then the WAL is checkpointed. Returns seconds."""
    create_schema(db)
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            events, rows = backlog_rows(count, start=start)
            now = time.time()
            scheduled = [
                (*row[:6], "scheduled", now + DAY + 29 * DAY * (start + i) / n, *row[8:],
                 f"user_{start + i}")
                for i, row in enumerate(rows)
            ]  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENTS, events)
            conn.executemany(
                f"INSERT INTO deliveries ({DELIVERY_COLUMNS}, cancel_key)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                scheduled,
            )
            conn.execute("COMMIT")
            print(f"  {start + count:,} of {n:,} scheduled", end="\r", flush=True)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    print()
    return time.perf_counter() - t0


@dataclass
class IngestRun:
    store: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_mb: float
    server_cpu: float
    other_cpu: float


def run_ingest(
    store: str, db: Path, tmp: Path, secret: str, sink_port: int, args: argparse.Namespace, run: int
) -> IngestRun:
    """`relay serve` on ``db`` under the load; its figures and peak RSS."""
    rules, templates = write_rules(tmp, sink_url=f"http://{HOST}:{sink_port}/hook")
    port = free_port()
    log = tmp / f"relay.{store}.{run}.log"
    env = relay_env(db, secret, rules, templates)
    proc = Proc(f"relay {store}", [str(RELAY_BIN), "serve", "--port", str(port)],
                cpu=SERVER_CPU, log_path=log, env=env)  # fmt: skip
    try:
        wait_http(proc, port, "/readyz", timeout_s=120)
        tag = f"{store[0]}{run}{int(time.time()) % 100000}"
        warmup = make_requests(args.warmup, secret, port, tag + "w")
        timed = make_requests(args.events, secret, port, tag + "t")
        meters = Meters([proc.pid], [PID_SELF])
        done = threading.Event()

        def scrape() -> None:  # what a Prometheus server does meanwhile
            while not done.wait(2.0):
                for path in ("/readyz", "/metrics"):
                    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as r:
                        r.read()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        try:
            tally = asyncio.run(run_load([port], warmup, timed, args.concurrency, "raw", meters))
        finally:
            done.set()
            scraper.join()
        status = proc_status_kb(proc.pid)
        peak_mb = max(status.get("VmHWM", 0), status.get("VmRSS", 0)) / 1024
        latencies = sorted(tally.latencies_ms)
        return IngestRun(
            store,
            len(timed) / meters.seconds,
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            tally.errors,
            peak_mb,
            meters.server_cpu,
            meters.other_cpu,
        )
    finally:
        proc.stop()


@dataclass
class ClaimRun:
    store: str
    step_ms: list[float] = field(default_factory=list)  # promote_due + claim_due, each tick
    stats_ms: list[float] = field(default_factory=list)  # queue_stats

    @property
    def median(self) -> float:
        return statistics.median(self.step_ms)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.step_ms), 0.99)


def add_due(db: Path, n: int, start: int) -> None:
    """``n`` more events, each with one delivery due now (pending), numbered from ``start``."""
    events, rows = backlog_rows(n, start=start)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_EVENTS, events)
        conn.executemany(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def run_claims(dbs: dict[str, Path], claims: int, run: int) -> list[ClaimRun]:
    """The worker's step on each store, ticks alternating between them (so both see the same
    machine): ``claims`` deliveries due now in each, claimed 32 at a time until none is left."""
    from relay.store import Attempt, SQLiteStore

    stores, results = {}, {}
    for name, db in dbs.items():
        add_due(db, claims, 10_000_000 * (run + 1))
        stores[name] = SQLiteStore(db)
        await stores[name].open()
        results[name] = ClaimRun(name)
    try:
        for _ in range(20):
            for name, store in stores.items():
                t0 = time.perf_counter()
                await store.queue_stats(time.time())
                results[name].stats_ms.append(1000 * (time.perf_counter() - t0))
        left = set(stores)
        while left:
            for name in sorted(left):
                store, now = stores[name], time.time()
                t0 = time.perf_counter()
                await store.promote_due(now)
                batch = await store.claim_due(now, 32, 60, sink="hook", rules=["bench"])
                results[name].step_ms.append(1000 * (time.perf_counter() - t0))
                if not batch:
                    left.discard(name)
                await asyncio.gather(
                    *(
                        store.record_delivered(
                            Attempt(c.id, now, 1.0, 200, None), lease=c.lease_until
                        )
                        for c in batch
                    )
                )
    finally:
        for store in stores.values():
            await store.close()
    return list(results.values())


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)``."""
    median, low, high = (
        fmt.format(v) for v in (statistics.median(values), min(values), max(values))
    )
    return f"{median} ({low}-{high})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scheduled", type=int, default=1_000_000, help="(1000000)")
    parser.add_argument("--events", type=int, default=5000, help="timed events per run (5000)")
    parser.add_argument("--warmup", type=int, default=500, help="(500)")
    parser.add_argument("--concurrency", type=int, default=32, help="(32)")
    parser.add_argument("--claims", type=int, default=3200, help="due deliveries claimed (3200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per store (3)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    pin_self(LOAD_CPU)
    secret = new_secret()
    print(
        f"scheduled bench: {args.scheduled:,} scheduled deliveries vs an empty store; "
        f"{args.events} events per ingest run (+{args.warmup} warm-up), concurrency "
        f"{args.concurrency}, load client: bench/_load.py (raw asyncio), {args.repeat} runs each"
    )
    print(describe_relay())
    ingests: list[IngestRun] = []
    claims: list[ClaimRun] = []
    with workdir(keep=args.keep) as tmp:
        empty, full = tmp / "empty.db", tmp / "scheduled.db"
        create_schema(empty)
        print(f"- filling {full.name} ...", flush=True)
        took = fill_scheduled(full, args.scheduled)
        size_mb = sum(p.stat().st_size for p in tmp.glob("scheduled.db*")) / 1e6
        print(f"  {args.scheduled:,} in {took:.0f} s; {size_mb:,.0f} MB on disk")
        sink_port = free_port()
        sink_argv = [sys.executable, str(BENCH / "fake_sink.py"), "--port", str(sink_port)]
        sink = Proc("fake sink", sink_argv, cpu=LOAD_CPU, log_path=tmp / "sink.log")
        try:
            wait_http(sink, sink_port)
            for run in range(args.repeat):
                for name, db in (("empty", empty), ("scheduled", full)):
                    r = run_ingest(name, db, tmp, secret, sink_port, args, run)
                    ingests.append(r)
                    print(
                        f"  ingest {name:<9} run {run + 1}: {r.rate:,.0f} events/s, p50"
                        f" {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, errors {r.errors}, peak RSS"
                        f" {r.peak_mb:.1f} MB; server CPU {100 * r.server_cpu:.0f}%, other"
                        f" {100 * r.other_cpu:.0f}%",
                        flush=True,
                    )
                dbs = {"empty": empty, "scheduled": full}
                for c in asyncio.run(run_claims(dbs, args.claims, run)):
                    claims.append(c)
                    print(
                        f"  claim  {c.store:<9} run {run + 1}: step median {c.median:.2f} ms,"
                        f" p99 {c.p99:.2f} ms over {len(c.step_ms)} ticks; queue_stats median"
                        f" {statistics.median(c.stats_ms):.2f} ms",
                        flush=True,
                    )
        finally:
            sink.stop()
    return report(ingests, claims, args)


def report(ingests: list[IngestRun], claims: list[ClaimRun], args: argparse.Namespace) -> int:
    rows = []
    by = {name: [r for r in ingests if r.store == name] for name in ("empty", "scheduled")}
    cl = {name: [c for c in claims if c.store == name] for name in ("empty", "scheduled")}
    for name in ("empty", "scheduled"):
        rs, cs = by[name], cl[name]
        rows.append((
            name,
            spread([r.rate for r in rs]),
            spread([r.p50_ms for r in rs], "{:.1f}"),
            spread([r.p99_ms for r in rs], "{:.1f}"),
            spread([r.peak_mb for r in rs], "{:.1f}"),
            spread([c.median for c in cs], "{:.2f}"),
            spread([c.p99 for c in cs], "{:.2f}"),
            spread([statistics.median(c.stats_ms) for c in cs], "{:.2f}"),
        ))  # fmt: skip
    print()
    print(f"(median of {args.repeat} runs, with their range)")
    headers = ["store", "events/s", "p50 ms", "p99 ms", "peak RSS MB", "claim step ms",
               "claim p99 ms", "queue_stats ms"]  # fmt: skip
    print(fmt_table(headers, rows))
    rate = {n: statistics.median(r.rate for r in by[n]) for n in by}
    step = {n: statistics.median(c.median for c in cl[n]) for n in cl}
    peak = max(r.peak_mb for r in by["scheduled"])
    ingest_ratio = rate["scheduled"] / rate["empty"]
    claim_ratio = step["empty"] / step["scheduled"]
    verdicts = [
        (f"ingest with {args.scheduled:,} scheduled / empty: {ingest_ratio:.2f}",
         ingest_ratio >= TARGET_RATIO, f">= {TARGET_RATIO:.2f}"),
        (f"claim step, empty / with {args.scheduled:,} scheduled: {claim_ratio:.2f}",
         claim_ratio >= TARGET_RATIO, f">= {TARGET_RATIO:.2f}"),
        (f"peak RSS of relay serve with {args.scheduled:,} scheduled: {peak:.1f} MB",
         peak <= TARGET_MB, f"<= {TARGET_MB:.0f} MB"),
    ]  # fmt: skip
    for text, met, target in verdicts:
        print(f"{text} ({'meets' if met else 'MISSES'} the {target} target)")
    noisy = [r for r in ingests if r.other_cpu > 0.10]
    if noisy:
        print(f"warning: other processes used > 10% of a CPU in {len(noisy)} ingest run(s)")
    if args.json:
        args.json.write_text(json.dumps({
            "scheduled": args.scheduled,
            "ingest": [vars(r) for r in ingests],
            "claims": [{"store": c.store, "step_ms": c.step_ms, "stats_ms": c.stats_ms}
                       for c in claims],
        }, indent=2))  # fmt: skip
    return 0 if all(met for _, met, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
