"""Ingest throughput and latency: relay vs a verify-only baseline vs a naive commit-per-request.

Each target is started in turn as a subprocess pinned to CPU 0 (``taskset -c 0``) and driven over
real HTTP by wrk (C, bench/_wrkload.py) pinned to CPU 1, at a fixed concurrency (C connections,
one request in flight on each), for --seconds after a --warmup-seconds warm-up. Every request is
a distinct Clerk ``user.created`` event with its own svix-id, signed beforehand into wrk's Lua
script, so deduplication cannot shortcut anything and signing costs nothing in the timed phase.
Reported: events/s and latency percentiles as wrk counts them, each process's CPU from /proc
(wrk's own too: a load generator near 100% of its core sets the figures, not the server).

--load python swaps in the old Python generator (bench/_load.py: --events, --warmup, --client,
--latency-log); it can cap fast servers (it capped the h11 baseline at about 4,900 requests/s
where wrk drove 6,000), so its output says it is a fallback and its figures are not comparable.

Targets:
  baseline  bench/baseline_app.py: Starlette + uvicorn, verify the signature, answer 200
  naive     bench/naive_app.py: the same plus a per-request INSERT + COMMIT on the event loop
  relay     `relay serve --no-worker` with a bench rules.yaml (one http sink rule on
            user.created, so every event also stores one delivery), JSON logs to a file

With --database-url postgresql://..., relay stores in PostgreSQL instead of a SQLite file: each
run gets a fresh schema (bench_<hex>, through libpq's search_path option), created by `relay db
upgrade` and dropped afterwards. --replicas N starts N `relay serve --no-worker` processes on
that schema, replica i pinned to CPU i % cores, and spreads the C connections round-robin over
them. PostgreSQL itself runs unpinned on the same machine; its CPU for the replicas is measured
(its backends, found by their client ports, and its background processes) and shown apart. With
as many replicas as cores nothing is free for the load generator: it then runs on any CPU
(--load-cpu). The baseline and naive targets are unchanged by these flags.

--with-worker runs relay as plain `relay serve`, the default deployment: the same process also
delivers every event it accepts, to a fake sink (bench/fake_sink.py, fast 200s) on the load CPU,
so ingest shares its core with delivery. The figures are still ingest's.

    .venv/bin/python bench/ingest.py                  # wrk, 10 s per target, C=32
    .venv/bin/python bench/ingest.py --targets relay --repeat 3 \
        --database-url postgresql://postgres@127.0.0.1:5432/test --replicas 2
    .venv/bin/python bench/ingest.py --seconds 20 --concurrency 64 --targets relay,baseline
    .venv/bin/python bench/ingest.py --load python --events 20000   # the fallback
    .venv/bin/python bench/ingest.py --targets relay --with-worker
    .venv/bin/python bench/ingest.py --profile /tmp/prof   # py-spy on relay during its run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _database import Database, is_postgres, postgres_server, postgres_serving
from _fixtures import new_secret, relay_env, write_rules
from _load import make_requests, run_load
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
    pin_self,
    replica_cpu,
    wait_http,
    workdir,
)
from _profile import Profiler
from _report import (
    commit_latency_ms,
    commit_stats,
    commit_text,
    cpus_text,
    describe_relay,
    fmt_table,
    median_by_rate,
    percentile,
)
from _wrkload import run_wrk_load

from relay.store import redact_url


@dataclass
class Result:
    target: str
    events: int
    percentiles: dict[int, float]  # percentile -> ms
    errors: int
    first_error: str
    meters: Meters
    stored: str = ""
    commits: str = ""
    wrk_rate: float = 0.0  # requests/s as wrk counted them (0: the Python fallback ran)
    wrapped: int = 0  # times wrk's script started over (its events then were duplicates)

    @property
    def rate(self) -> float:
        if self.wrk_rate:
            return self.wrk_rate
        return self.events / self.meters.seconds if self.meters.seconds else 0.0

    @property
    def cpu_ms_per_event(self) -> float:
        """Server CPU time per event (all its threads, all replicas): the cost that caps one
        core."""
        return 1000 * self.meters.server_cpu * self.meters.seconds / self.events

    @property
    def pg_ms_per_event(self) -> float:
        """PostgreSQL's CPU time per event (its backends for the replicas, its WAL writer)."""
        return 1000 * self.meters.pg_cpu * self.meters.seconds / self.events

    def p(self, q: float) -> float:
        return self.percentiles.get(round(100 * q), float("nan"))


# --- targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    """What runs for one target: its server processes (one per replica) and their ports, and
    where relay stores (none for the baseline)."""

    label: str
    procs: list[Proc]
    ports: list[int]
    db: Database | None = None
    helpers: list[Proc] = field(default_factory=list)  # not measured as the server


def start_target(name: str, tmp: Path, secret: str, args: argparse.Namespace, run: int) -> Target:
    """Start target ``name``: one server pinned to the server CPU, or for relay on PostgreSQL
    ``--replicas`` servers, replica i pinned to CPU i % cores, on a fresh schema."""
    py = sys.executable
    stem = f"{name.replace(':', '-')}.{run}"
    log = tmp / f"{stem}.log"
    path = tmp / f"{stem}.db"
    port = args.port or free_port()
    if name == "baseline":
        argv = [py, str(BENCH / "baseline_app.py"), "--port", str(port)]
        env = {"BENCH_SECRET": secret}
        proc = Proc(name, argv, cpu=SERVER_CPU, log_path=log, env=env)
        return Target(name, [proc], [port])
    if name == "naive":
        argv = [py, str(BENCH / "naive_app.py"), "--port", str(port)]
        env = {"BENCH_SECRET": secret, "BENCH_DB": str(path)}
        proc = Proc(name, argv, cpu=SERVER_CPU, log_path=log, env=env)
        return Target(name, [proc], [port], Database.sqlite(path))
    if name == "relay" or name.startswith("relay:"):
        helpers = []
        sink_url = f"http://{HOST}:9/unused"  # never called with --no-worker
        if args.with_worker:  # deliveries go to a fake sink on the load CPU, as they arrive
            sink_port = free_port()
            sink_argv = [py, str(BENCH / "fake_sink.py"), "--port", str(sink_port)]
            helpers.append(
                Proc("fake sink", sink_argv, cpu=LOAD_CPU, log_path=tmp / f"{stem}.sink.log")
            )
            wait_http(helpers[0], sink_port)
            sink_url = f"http://{HOST}:{sink_port}/hook"
        rules, templates = write_rules(tmp, sink_url=sink_url)
        if args.database_url:
            db = Database.postgres(args.database_url)
            print(f"  {db.upgrade()}", flush=True)
        else:
            db = Database.sqlite(path)
        env = relay_env(db.url, secret, rules, templates)
        procs, ports = [], []
        roles = [] if args.with_worker else ["--no-worker"]
        for i in range(args.replicas):
            port_i = port if i == 0 else free_port()
            if name == "relay":
                argv = [str(RELAY_BIN), "serve", *roles, "--port", str(port_i)]
            else:  # an experiment: bench/relay_variants.py VARIANT
                variant = name.partition(":")[2]
                argv = [py, str(BENCH / "relay_variants.py"), variant, *roles]
                argv += ["--port", str(port_i)]
            log_i = log if args.replicas == 1 else tmp / f"{stem}.r{i}.log"
            procs.append(Proc(f"{name}#{i}", argv, cpu=replica_cpu(i), log_path=log_i, env=env))
            ports.append(port_i)
        return Target(relay_label(name, args), procs, ports, db, helpers)
    raise SystemExit(f"unknown target {name!r} (baseline, naive, relay, relay:VARIANT)")


def relay_label(name: str, args: argparse.Namespace) -> str:
    """``relay`` or ``relay:VARIANT``, with ``+worker`` when it also delivers and ``pg xN`` on
    PostgreSQL."""
    label = name + ("+worker" if args.with_worker else "")
    if not args.database_url:
        return label
    return f"{label} pg x{args.replicas}"


def run_target(name: str, tmp: Path, secret: str, args: argparse.Namespace, run: int) -> Result:
    target = start_target(name, tmp, secret, args, run)
    db = target.db
    profilers = []
    if args.profile and name in args.profile_targets:
        for i, proc in enumerate(target.procs):
            stem = f"{name.replace(':', '-')}.{run}" + (f".r{i}" if len(target.procs) > 1 else "")
            profilers.append(Profiler(args.profile, stem, proc.pid, args.profile_mode))
    try:
        for proc, port in zip(target.procs, target.ports, strict=True):
            wait_http(proc, port)
        tag = f"{run}{int(time.time()) % 100000}"
        pids = {proc.pid for proc in target.procs}
        pg_pids = None
        if db is not None and db.is_postgres:
            admin = db.admin_url

            def pg_pids() -> set[int]:
                return postgres_serving(admin, pids)

        relay = name.startswith("relay")
        commits_before: list[dict[str, float]] = []

        def during() -> None:
            if relay:
                commits_before.extend(commit_stats(port) for port in target.ports)
            for profiler in profilers:
                profiler.start()

        if args.load == "wrk":
            tally, meters = run_wrk_load(
                target.ports,
                [proc.pid for proc in target.procs],
                secret,
                tag,
                tmp,
                connections=args.concurrency,
                seconds=args.seconds,
                warmup_seconds=args.warmup_seconds,
                cpu=args.load_cpu_num,
                pg_pids=pg_pids,
                during=during,
            )
            sent = tally.warmup_requests + tally.requests
            events, errors, wrapped = tally.requests, tally.errors, tally.wrapped
            kinds, percentiles, wrk_rate = tally.kinds, tally.percentiles, tally.rate
        else:
            # The Host header names the first port; servers here ignore it.
            warmup = make_requests(args.warmup, secret, target.ports[0], tag + "w")
            timed = make_requests(args.events, secret, target.ports[0], tag + "t")
            meters = Meters([proc.pid for proc in target.procs], [PID_SELF], pg_pids)
            py_tally = asyncio.run(
                run_load(target.ports, warmup, timed, args.concurrency, args.client, meters, during)
            )
            sent = len(warmup) + len(timed)
            events, errors, wrapped, wrk_rate = len(timed), py_tally.errors, 0, 0.0
            kinds = py_tally.kinds
            ordered = sorted(py_tally.latencies_ms)
            percentiles = {p: percentile(ordered, p / 100) for p in (50, 75, 90, 99)}
            if args.latency_log:
                t_first = min(py_tally.started, default=0.0)
                with args.latency_log.open("a") as f:
                    for t0, ms in zip(py_tally.started, py_tally.latencies_ms, strict=True):
                        f.write(f"{target.label},{run},{t0 - t_first:.6f},{ms:.3f}\n")
        for profiler in profilers:
            profiler.stop()
        stored = ""
        if db is not None:
            stored_events = db.count("SELECT COUNT(*) FROM events")
            deliveries = db.count("SELECT COUNT(*) FROM deliveries")
            stored = f"{stored_events} events, {deliveries} deliveries"
            # wrk stops with requests in flight: those may be stored yet not counted as answered
            answered = sent - errors
            if stored_events < answered or (args.load == "python" and stored_events != answered):
                stored += " (MISMATCH)"
        commits = ""
        if relay:
            after = [commit_stats(port) for port in target.ports]
            commits = commit_text(after, commits_before)
        first_error = kinds.most_common(1)[0][0] if kinds else ""
        return Result(
            target.label,
            events,
            percentiles,
            errors,
            first_error,
            meters,
            stored,
            commits,
            wrk_rate,
            wrapped,
        )
    finally:
        for proc in target.procs:
            code = proc.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(f"  {proc.name} exited with {code}:\n{proc.tail()}")
        for helper in target.helpers:
            helper.stop()
        if db is not None and db.is_postgres and not args.keep:
            db.drop()


def spread(results: Sequence[Result]) -> str:
    """`` (min-max)`` of the runs' events/s, or nothing for a single run."""
    if len(results) < 2:
        return ""
    rates = sorted(r.rate for r in results)
    return f" ({rates[0]:,.0f}-{rates[-1]:,.0f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk",
        help="load generator: wrk (C, the default; the figures that count) or the Python "
        "fallback (bench/_load.py: caps fast servers, its figures are not comparable)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="wrk: timed phase per target and run (10)"
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="wrk: untimed warm-up first (2)"
    )
    parser.add_argument(
        "--events", type=int, default=5000, help="python: timed events per target (5000)"
    )
    parser.add_argument("--warmup", type=int, default=500, help="python: untimed events (500)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight (32)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument(
        "--targets",
        default="baseline,naive,relay",
        help="comma-separated: baseline, naive, relay, or relay:VARIANT (an experiment of "
        "bench/relay_variants.py, e.g. relay:stock+nolog or relay:hop)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="python load client: raw asyncio streams (default, cheapest) or httpx.AsyncClient",
    )
    parser.add_argument("--profile", type=Path, help="run py-spy on the targets, write here")
    parser.add_argument("--profile-targets", default="relay", help="which targets to profile")
    parser.add_argument(
        "--profile-mode",
        choices=sorted(Profiler.MODES),
        default="cpu",
        help="py-spy samples: cpu (running threads only), wall (idle too: waits, fsync), "
        "gil (threads holding the GIL)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per target; median shown")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument(
        "--latency-log",
        type=Path,
        help="python: append target,run,start_s,latency_ms lines here",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="the relay target stores in this PostgreSQL database (postgresql://...), in a "
        "fresh schema per run, dropped afterwards (default: a SQLite file in the temp dir)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="relay serve processes on the database (PostgreSQL only), replica i pinned to "
        "CPU i %% cores; connections go round-robin to them (1)",
    )
    parser.add_argument(
        "--with-worker",
        action="store_true",
        help="run relay as plain `relay serve` (ingest and delivery in one process, the default "
        "deployment), delivering to a fake sink on the load CPU while it ingests",
    )
    parser.add_argument(
        "--load-cpu",
        choices=["1", "any"],
        help="pin the load generator to CPU 1, or let it run on any CPU "
        "(default: 1 with one replica, any with more)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.concurrency < 1 or args.events > 1_000_000:
        parser.error("--events must be 1..1000000 and --concurrency >= 1")
    if not 1 <= args.seconds <= 120 or not 1 <= args.warmup_seconds <= 30:
        parser.error("--seconds must be 1..120 and --warmup-seconds 1..30")
    if args.load == "wrk" and args.latency_log:
        parser.error("--latency-log needs --load python (wrk reports percentiles only)")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.database_url and not is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (the default is SQLite)")
    if not 1 <= args.replicas <= 8:
        parser.error("--replicas must be 1..8")
    if args.replicas > 1 and not args.database_url:
        parser.error("--replicas > 1 needs --database-url (replicas share a PostgreSQL store)")
    args.profile_targets = set(args.profile_targets.split(","))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    load_cpu = args.load_cpu or ("1" if args.replicas == 1 else "any")
    pin_self(LOAD_CPU if load_cpu == "1" else None)
    args.load_cpu_num = LOAD_CPU if load_cpu == "1" else None
    secret = new_secret()
    cpus = os.cpu_count() or 1
    if args.replicas > 1:
        servers = ", ".join(f"replica {i} on CPU {replica_cpu(i)}" for i in range(args.replicas))
    else:
        servers = f"server on CPU {SERVER_CPU}"
    where = f"load on {'CPU ' + str(LOAD_CPU) if load_cpu == '1' else 'any CPU'} ({cpus} CPUs)"
    if args.load == "wrk":
        print(
            f"ingest bench (wrk): {args.seconds:g} s per target and run (+{args.warmup_seconds:g}"
            f" s warm-up), {args.concurrency} connections, distinct pre-signed user.created "
            f"events; {servers}, {where}"
        )
    else:
        print(
            f"ingest bench (PYTHON FALLBACK load generator, client {args.client}: it caps fast "
            "servers, so these figures are NOT comparable with wrk's): "
            f"{args.events} events per target (+{args.warmup} warm-up), "
            f"concurrency {args.concurrency}; {servers}, {where}"
        )
    if args.database_url:
        print(
            f"relay stores in {postgres_server(args.database_url)} at "
            f"{redact_url(args.database_url)} (unpinned, on the same {cpus} CPUs), "
            f"{args.replicas} replica(s); baseline and naive are unchanged"
        )
    if args.replicas >= cpus:
        print(
            f"note: {args.replicas} replicas on {cpus} CPUs: the load generator and PostgreSQL "
            "share the replicas' cores; the CPU columns say who used what"
        )
    print(describe_relay())
    runs: dict[str, list[Result]] = {name: [] for name in targets}
    load_name = "wrk" if args.load == "wrk" else "load"
    with workdir(keep=args.keep) as tmp:
        p50, p90 = commit_latency_ms(tmp)
        print(
            f"disk: one SQLite commit (WAL, synchronous=FULL) takes {p50:.2f} ms "
            f"(p90 {p90:.2f} ms) in {tmp}"
        )
        for run in range(args.repeat):
            for name in targets:
                label = relay_label(name, args) if name.startswith("relay") else name
                label += f" (run {run + 1}/{args.repeat})" if args.repeat > 1 else ""
                print(f"- {label} ...", flush=True)
                r = run_target(name, tmp, secret, args, run)
                runs[name].append(r)
                print(
                    f"  {r.rate:,.0f} events/s, p50 {r.p(0.5):.1f} ms, p99 {r.p(0.99):.1f} ms, "
                    f"errors {r.errors}"
                    + (f" ({r.first_error})" if r.first_error else "")
                    + f"; server CPU {cpus_text(r.meters.server_cpus)}"
                    + (f", PostgreSQL CPU {100 * r.meters.pg_cpu:.0f}%" if r.meters.pg_pids else "")
                    + f", {load_name} CPU {100 * r.meters.helper_cpu:.0f}%"
                    + f", other load {100 * r.meters.other_cpu:.0f}%"
                    + f", steal {100 * r.meters.steal:.0f}%"
                    + (f"; stored {r.stored}" if r.stored else "")
                    + (f"; SCRIPT WRAPPED {r.wrapped}x (duplicates sent)" if r.wrapped else "")
                    + (f"\n  {r.commits}" if r.commits else ""),
                    flush=True,
                )
    results = [median_by_rate(rs) for rs in runs.values()]
    runs_of = {median_by_rate(rs).target: rs for rs in runs.values()}
    print()
    if args.repeat > 1:
        print(f"(median of {args.repeat} runs by throughput; events/s spread min-max)")
    rows = [
        (
            r.target,
            f"{r.rate:,.0f}" + spread(runs_of[r.target]),
            f"{r.p(0.5):.1f}",
            f"{r.p(0.99):.1f}",
            r.errors,
            cpus_text(r.meters.server_cpus),
            f"{r.cpu_ms_per_event:.2f}",
            f"{100 * r.meters.pg_cpu:.0f}%" if r.meters.pg_pids else "-",
            f"{r.pg_ms_per_event:.2f}" if r.meters.pg_pids else "-",
            f"{100 * r.meters.other_cpu:.0f}%",
            f"{100 * r.meters.steal:.0f}%",
            f"{100 * r.meters.helper_cpu:.0f}%",
        )
        for r in results
    ]
    headers = [
        "target",
        "events/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU",
        "CPU ms/event",
        "PG CPU",
        "PG ms/event",
        "other CPU",
        "steal",
        f"{load_name} CPU",
    ]
    print(fmt_table(headers, rows))
    print(
        "(CPU: % of one core over the timed phase; server: every replica's process, all threads; "
        "PG: PostgreSQL's backends for them and its background processes; other: the rest of "
        "the machine's busy time; steal: time the hypervisor gave this VM's CPUs to others)"
    )
    by_name = {r.target: r for r in results}
    relay = next((r for r in results if r.target.startswith("relay") and ":" not in r.target), None)
    print()
    if relay and "baseline" in by_name:
        baseline = by_name["baseline"]
        ratio = relay.rate / baseline.rate
        print(f"{relay.target} / baseline throughput: {ratio:.2f}  (target >= 0.80)")
        if args.repeat > 1:  # run i of each target ran back to back: the pair saw the same load
            paired = zip(runs[relay.target], runs["baseline"], strict=True)
            pairs = sorted(r.rate / b.rate for r, b in paired)
            print(
                f"  paired by run: median {statistics.median(pairs):.2f}, "
                f"range {pairs[0]:.2f}-{pairs[-1]:.2f}"
            )
        cpu_ratio = baseline.cpu_ms_per_event / relay.cpu_ms_per_event
        print(f"  by server CPU per event: {cpu_ratio:.2f} (steadier when the machine is busy)")
    if relay and "naive" in by_name:
        ratio = relay.rate / by_name["naive"].rate
        print(f"{relay.target} / naive throughput:    {ratio:.2f}  (target >= 2.00)")
    if relay:
        verdict = "meets" if relay.p(0.99) <= 25 else "misses"
        print(
            f"{relay.target} p99: {relay.p(0.99):.1f} ms at {args.concurrency} connections "
            f"({verdict} the <= 25 ms target)"
        )
    busy = [r.target for r in results if r.meters.helper_cpu > 0.85]
    if busy:
        print(
            f"warning: the load generator used > 85% of its core for {', '.join(busy)}: "
            "the figures for those may be load-bound, not server-bound"
        )
    wrapped = [r.target for r in results if r.wrapped]
    if wrapped:
        print(f"warning: wrk's script wrapped for {', '.join(wrapped)}: duplicates were sent")
    if args.load == "python":
        print(
            "note: Python fallback load generator: these figures are not comparable with wrk's "
            "(the generator, not the server, may set them); rerun without --load python"
        )
    noisy = [r.target for r in results if r.meters.other_cpu > 0.10]
    if noisy:
        print(
            f"warning: other processes used > 10% of a CPU during {', '.join(noisy)}: "
            "rerun on a quiet machine"
        )
    stolen = [r.target for r in results if r.meters.steal > 0.05]
    if stolen:
        print(
            f"warning: the hypervisor stole > 5% of a CPU during {', '.join(stolen)}: "
            "every process ran slower by an amount no process shows; compare runs with little steal"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "events": r.events,
                        "seconds": r.meters.seconds,
                        "events_per_s": r.rate,
                        "p50_ms": r.p(0.5),
                        "p99_ms": r.p(0.99),
                        "errors": r.errors,
                        "server_cpu": r.meters.server_cpu,
                        "server_cpus": r.meters.server_cpus,
                        "server_cpu_ms_per_event": r.cpu_ms_per_event,
                        "pg_cpu": r.meters.pg_cpu,
                        "pg_cpu_ms_per_event": r.pg_ms_per_event,
                        "other_cpu": r.meters.other_cpu,
                        "machine_cpu": r.meters.machine,
                        "steal_cpu": r.meters.steal,
                        "load_cpu": r.meters.helper_cpu,
                        "load": args.load,
                        "p90_ms": r.p(0.9),
                        "database": "postgresql" if args.database_url else "sqlite",
                        "replicas": args.replicas if r.target.startswith("relay") else 1,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
