"""Delivery throughput: `relay worker` draining a backlog vs a bare httpx client, same requests.

A SQLite store (relay's own schema, created through SQLiteStore) is filled in bulk with N
user.created events, each with one pending delivery to an http sink that points at a local fake
sink (bench/fake_sink.py: fast 200s, pinned to CPU 1). Then:

  baseline  one process pinned to CPU 0 posts the same N JSON bodies (the event envelope as the
            http sink serialises it, with the same Content-Type and Idempotency-Key headers) with
            one httpx.AsyncClient at the sink's concurrency: the cost of the HTTP part alone
  relay     `relay worker` pinned to CPU 0 on that database, from its first request at the sink
            until the database says all N are delivered (polled read-only every 20 ms)

It prints deliveries/s for both and the ratio relay / baseline (target >= 0.7).

With --database-url postgresql://..., the backlog is written (COPY, then ANALYZE) into a fresh
schema of that database (bench_<hex>, set as search_path), created by `relay db upgrade` and
dropped after the run, and --replicas N starts N `relay worker` processes on it, worker i pinned
to CPU i % cores, each with the sink's concurrency. The figure is the same (first request at the
sink to all N delivered); the 10-90% rate leaves out the start-up skew between workers. With as
many workers as cores, the fake sink and this process run on any CPU (--helper-cpu).

    .venv/bin/python bench/delivery.py                       # N=5000, concurrency 32
    .venv/bin/python bench/delivery.py --deliveries 20000 --concurrency 64
    .venv/bin/python bench/delivery.py --profile /tmp/prof   # py-spy on the worker
    .venv/bin/python bench/delivery.py --targets relay --replicas 2 \
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _database import Database, is_postgres, postgres_server, postgres_serving
from _fixtures import new_secret, relay_env, write_rules
from _meters import Meters
from _procs import (
    BENCH,
    HOST,
    LOAD_CPU,
    PID_SELF,
    RELAY_BIN,
    SERVER_CPU,
    Proc,
    free_port,
    http_get_json,
    pin_self,
    replica_cpu,
    taskset,
    wait_http,
    workdir,
)
from _profile import Profiler
from _report import commit_latency_ms, cpus_text, describe_relay, fmt_table, median_by_rate

from relay.store import redact_url

DELIVERED = "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'"
# What the poll counts: the deliveries still to do, from the partial claim index relay keeps
# (the delivered ones have no index of their own, so counting them scans the table each poll).
UNFINISHED = "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'failed')"
NOT_OK = "SELECT COUNT(*) FROM deliveries WHERE status IN ('failed', 'dead')"


@dataclass
class Outcome:
    target: str
    deliveries: int
    seconds: float
    errors: int
    cpus: list[float]  # each process under test (one per worker), fractions of one core
    note: str = ""
    pg_cpu: float | None = None  # PostgreSQL working for them (and for the bench's poll)
    steady: float | None = None  # deliveries/s between 10% and 90% delivered (the poll's view)
    other_cpu: float | None = None  # the machine's busy time the processes measured leave
    helper_cpu: float | None = None  # the fake sink and this process (the poll)
    steal: float | None = None  # the hypervisor's (see MachineMeter)

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def cpu(self) -> float:
        return sum(self.cpus)

    def cpu_text(self) -> str:
        return cpus_text(self.cpus)


# --- the baseline client (runs as its own pinned process) --------------------------------------


def load_requests(db_url: str) -> list[tuple[bytes, dict[str, str]]]:
    """The body and headers the http sink sends for each pending delivery (envelope as JSON)."""
    query = (
        "SELECT e.body, d.idempotency_key FROM deliveries d JOIN events e"
        " ON e.id = d.event_id WHERE d.status = 'pending' ORDER BY d.next_attempt_at, d.id"
    )
    if is_postgres(db_url):
        import psycopg

        with psycopg.connect(db_url, connect_timeout=5) as pg:
            rows = pg.execute(query).fetchall()
    else:
        path = db_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    out = []
    for body, key in rows:
        content = json.dumps(
            json.loads(body), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        out.append((content, headers))
    return out


async def post_all(
    url: str, requests: Sequence[tuple[bytes, dict[str, str]]], concurrency: int
) -> tuple[float, int]:
    """Post every request with ``concurrency`` workers on one client; (seconds, errors)."""
    import httpx

    errors = 0
    it = iter(requests)
    async with httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": "relay-bench/0.1"},
    ) as client:

        async def worker() -> None:
            nonlocal errors
            for content, headers in it:
                try:
                    response = await client.post(url, content=content, headers=headers)
                    if response.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, errors


def client_main(args: argparse.Namespace) -> int:
    requests = load_requests(args.db)
    cpu0 = time.process_time()
    seconds, errors = asyncio.run(post_all(args.url, requests, args.concurrency))
    cpu = (time.process_time() - cpu0) / seconds if seconds else 0.0
    print(json.dumps({"n": len(requests), "seconds": seconds, "errors": errors, "cpu": cpu}))
    return 0


# --- the bench ----------------------------------------------------------------------------------


def run_baseline(db: Database, sink_port: int, concurrency: int, tmp: Path) -> Outcome:
    http_get_json(sink_port, "/reset", method="POST")
    argv = [
        *taskset(SERVER_CPU),
        sys.executable,
        str(Path(__file__).resolve()),
        "--client-only",
        "--db",
        db.url,
        "--url",
        f"http://{HOST}:{sink_port}/hook",
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"baseline client failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stats = http_get_json(sink_port, "/stats")
    note = f"sink counted {stats['count']}"
    return Outcome(
        "httpx baseline", result["n"], result["seconds"], result["errors"], [result["cpu"]], note
    )


def steady_rate(seen: Sequence[tuple[float, int]], n: int) -> float | None:
    """Deliveries/s from the first poll at >= 10% delivered to the first at >= 90%: the rate
    once every worker runs, without start-up and the last stragglers."""
    low = next(((t, k) for t, k in seen if k >= 0.1 * n), None)
    high = next(((t, k) for t, k in seen if k >= 0.9 * n), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[1] - low[1]) / (high[0] - low[0])


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def run_relay(
    db: Database,
    n: int,
    sink: Proc,
    sink_port: int,
    concurrency: int,
    tmp: Path,
    secret: str,
    profile: Path | None,
    timeout_s: float,
    variant: str = "",
    replicas: int = 1,
) -> Outcome:
    http_get_json(sink_port, "/reset", method="POST")
    rules, templates = write_rules(
        tmp, sink_url=f"http://{HOST}:{sink_port}/hook", concurrency=concurrency
    )
    env = relay_env(db.url, secret, rules, templates)
    env["RELAY_SHUTDOWN_GRACE_S"] = "2"
    procs = []
    for i in range(replicas):
        port = free_port()
        if variant:
            argv = [sys.executable, str(BENCH / "relay_variants.py"), variant, "--worker-only"]
            argv += ["--port", str(port)]
        else:
            argv = [str(RELAY_BIN), "worker", "--port", str(port)]
        name = "relay worker" + (f" #{i}" if replicas > 1 else "")
        log = tmp / ("worker.log" if replicas == 1 else f"worker.{i}.log")
        procs.append(Proc(name, argv, cpu=replica_cpu(i), log_path=log, env=env))
    profilers = []
    if profile:
        for i, proc in enumerate(procs):
            stem = "worker" + (f".{i}" if replicas > 1 else "")
            profilers.append(Profiler(profile, stem, proc.pid, "cpu"))

    def check_alive() -> None:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")

    try:
        deadline = time.monotonic() + timeout_s
        stats = {"count": 0}
        while not stats["count"]:
            check_alive()
            if time.monotonic() > deadline:
                tails = "\n".join(proc.tail() for proc in procs)
                raise RuntimeError(f"no delivery reached the sink in {timeout_s} s:\n{tails}")
            time.sleep(0.01)
            stats = http_get_json(sink_port, "/stats")
        for profiler in profilers:
            profiler.start()
        pg_pids = None
        if db.is_postgres:
            admin, clients = db.admin_url, {proc.pid for proc in procs} | {PID_SELF}
            db.count("SELECT 1")  # the poll's connection, open before the PG meter starts

            def pg_pids() -> set[int]:
                return postgres_serving(admin, clients)

        meters = Meters([proc.pid for proc in procs], [PID_SELF, sink.pid], pg_pids)
        meters.start()
        delivered = 0
        seen: list[tuple[float, int]] = []  # (time, delivered) at each poll
        while delivered < n:
            check_alive()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
            delivered = n - db.count(UNFINISHED)  # none fail here: the sink answers 200
            seen.append((time.perf_counter(), delivered))
        end = time.time()
        meters.stop()
        for profiler in profilers:
            profiler.stop()
        stats = http_get_json(sink_port, "/stats")
        errors = db.count(NOT_OK)
        delivered = db.count(DELIVERED)
        seconds = end - stats["first"]
        note = f"sink counted {stats['count']}, {delivered} delivered in the db"
        if delivered < n:
            note += f" (TIMED OUT after {timeout_s} s)"
        name = f"relay worker ({variant})" if variant else "relay worker"
        if db.is_postgres:
            name += f" pg x{replicas}"
        return Outcome(
            name,
            delivered,
            seconds,
            errors,
            meters.server_cpus,
            note,
            meters.pg_cpu if db.is_postgres else None,
            steady_rate(seen, n),
            meters.other_cpu,
            meters.helper_cpu,
            meters.steal,
        )
    finally:
        for proc in procs:
            proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=5000, help="backlog size (5000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="sink concurrency (per worker) = client workers (32)",
    )
    parser.add_argument("--timeout", type=float, default=100.0, help="give up after (s)")
    parser.add_argument("--profile", type=Path, help="run py-spy on the worker, write here")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; median shown")
    parser.add_argument(
        "--variant",
        default="",
        help="also run this experiment of bench/relay_variants.py (e.g. stock+claimidx)",
    )
    parser.add_argument(
        "--targets",
        default="baseline,relay",
        help="comma-separated: baseline (httpx client), relay (relay worker) (both)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="the backlog and the workers' store are in this PostgreSQL database "
        "(postgresql://...), in a fresh schema per run, dropped afterwards (default: a SQLite "
        "file in the temp dir)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="relay worker processes draining the same backlog (PostgreSQL only), worker i "
        "pinned to CPU i %% cores (1)",
    )
    parser.add_argument(
        "--helper-cpu",
        choices=["1", "any"],
        help="pin the fake sink and this process to CPU 1, or let them run on any CPU "
        "(default: 1 with one worker, any with more)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    # internal: the baseline client process
    parser.add_argument("--client-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_only:
        return client_main(args)
    if not 1 <= args.deliveries <= 1_000_000 or not 1 <= args.concurrency <= 256:
        parser.error("--deliveries must be 1..1000000 and --concurrency 1..256")
    if args.database_url and not is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (the default is SQLite)")
    if not 1 <= args.replicas <= 8:
        parser.error("--replicas must be 1..8")
    if args.replicas > 1 and not args.database_url:
        parser.error("--replicas > 1 needs --database-url (workers share a PostgreSQL store)")
    targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    if not targets or targets - {"baseline", "relay"}:
        parser.error("--targets: baseline, relay or both")
    helper_cpu = args.helper_cpu or ("1" if args.replicas == 1 else "any")
    pin_self(LOAD_CPU if helper_cpu == "1" else None)
    helpers_on = f"CPU {LOAD_CPU}" if helper_cpu == "1" else "any CPU"
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    if args.replicas > 1:
        workers = ", ".join(f"worker {i} on CPU {replica_cpu(i)}" for i in range(args.replicas))
    else:
        workers = f"worker / client on CPU {SERVER_CPU}"
    print(
        f"delivery bench: {args.deliveries} deliveries, concurrency {args.concurrency}; "
        f"{workers}, fake sink and this process on {helpers_on} ({cpus} CPUs)"
    )
    if args.database_url:
        print(
            f"store: {postgres_server(args.database_url)} at {redact_url(args.database_url)} "
            f"(unpinned, on the same {cpus} CPUs), {args.replicas} worker(s), each with sink "
            f"concurrency {args.concurrency}"
        )
    if args.replicas >= cpus:
        print(
            f"note: {args.replicas} workers on {cpus} CPUs: the fake sink, this process and "
            "PostgreSQL share the workers' cores; the CPU columns say who used what"
        )
    print(describe_relay())
    secret = new_secret()
    with workdir(keep=args.keep) as tmp:
        p50, p90 = commit_latency_ms(tmp)
        print(f"disk: one SQLite commit (WAL, synchronous=FULL) takes {p50:.2f} ms (p90 {p90:.2f})")
        sink_port = free_port()
        sink = Proc(
            "fake sink",
            [sys.executable, str(BENCH / "fake_sink.py"), "--port", str(sink_port)],
            cpu=LOAD_CPU if helper_cpu == "1" else None,
            log_path=tmp / "sink.log",
        )
        wait_http(sink, sink_port)
        runs: dict[str, list[Outcome]] = {}

        def new_backlog(stem: str) -> Database:
            if args.database_url:
                db = Database.postgres(args.database_url)
            else:
                db = Database.sqlite(tmp / f"{stem}.db")
            seconds = db.fill_backlog(args.deliveries)
            print(f"backlog: {args.deliveries} pending deliveries written in {seconds:.1f} s")
            return db

        def done_with(db: Database) -> None:
            if db.is_postgres and not args.keep:
                db.drop()
            elif db.path is not None:
                for path in tmp.glob(f"{db.path.name}*"):
                    path.unlink()

        for run in range(args.repeat):
            db = new_backlog(f"relay.{run}")
            if "baseline" in targets:  # reads the backlog, changes nothing
                print("- httpx baseline ...", flush=True)
                r = run_baseline(db, sink_port, args.concurrency, tmp)
                runs.setdefault("baseline", []).append(r)
                print(f"  {r.rate:,.0f} deliveries/s, CPU {r.cpu_text()}", flush=True)
            if "relay" not in targets:
                done_with(db)
                continue
            for variant in ["", args.variant] if args.variant else [""]:
                if variant:  # a fresh backlog for the experiment
                    db = new_backlog(f"relay.{run}.{variant}")
                label = f"relay worker {variant}".strip()
                if args.database_url:
                    label += f" pg x{args.replicas}"
                print(f"- {label} ...", flush=True)
                r = run_relay(
                    db,
                    args.deliveries,
                    sink,
                    sink_port,
                    args.concurrency,
                    tmp,
                    secret,
                    args.profile,
                    args.timeout,
                    variant,
                    args.replicas,
                )
                runs.setdefault(variant or "relay", []).append(r)
                steady = "" if r.steady is None else f" ({r.steady:,.0f}/s from 10% to 90%)"
                print(
                    f"  {r.rate:,.0f} deliveries/s{steady}, CPU {r.cpu_text()}"
                    + (f", PostgreSQL CPU {percent(r.pg_cpu)}" if db.is_postgres else "")
                    + f", sink+poll CPU {percent(r.helper_cpu)}"
                    + f", other load {percent(r.other_cpu)}, steal {percent(r.steal)}",
                    flush=True,
                )
                done_with(db)
        results = {key: median_by_rate(rs) for key, rs in runs.items()}
    print()
    rows = [
        (
            r.target,
            r.deliveries,
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            "-" if r.steady is None else f"{r.steady:,.0f}",
            r.errors,
            r.cpu_text(),
            percent(r.pg_cpu),
            percent(r.helper_cpu),
            percent(r.other_cpu),
            percent(r.steal),
            r.note,
        )
        for r in results.values()
    ]
    headers = ["target", "deliveries", "seconds", "deliveries/s", "10-90%/s", "errors", "CPU"]
    headers.append("PG CPU")
    print(fmt_table([*headers, "sink+poll CPU", "other CPU", "steal", "note"], rows))
    print(
        "(CPU: % of one core while draining; PG: PostgreSQL's backends for the workers and the "
        "bench's poll, and its background processes; sink+poll: the fake sink and this process; "
        "other: the rest of the machine's busy time; steal: time the hypervisor gave this VM's "
        "CPUs to others; the last four for relay only)"
    )
    if args.repeat > 1:
        print(f"(median of {args.repeat} runs)")
    base = results.get("baseline")
    ratio = None
    if base and base.rate:
        for key, r in results.items():
            if key != "baseline":
                print(f"\n{r.target} / httpx baseline: {r.rate / base.rate:.2f}  (target >= 0.70)")
        if "relay" in results:
            ratio = results["relay"].rate / base.rate
    noisy = [r.target for r in results.values() if (r.other_cpu or 0.0) > 0.10]
    if noisy:
        print(
            f"warning: other processes used > 10% of a CPU during {', '.join(noisy)}: "
            "rerun on a quiet machine"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "deliveries": r.deliveries,
                        "seconds": r.seconds,
                        "per_s": r.rate,
                        "per_s_10_to_90": r.steady,
                        "errors": r.errors,
                        "cpu": r.cpu,
                        "cpus": r.cpus,
                        "pg_cpu": r.pg_cpu,
                        "other_cpu": r.other_cpu,
                        "sink_and_poll_cpu": r.helper_cpu,
                        "steal_cpu": r.steal,
                        "database": "postgresql" if args.database_url else "sqlite",
                        "replicas": args.replicas if key != "baseline" else 1,
                    }
                    for key, r in results.items()
                ]
                + [{"ratio": ratio}],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
