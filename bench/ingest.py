"""Ingest throughput and latency: relay vs a verify-only baseline vs a naive commit-per-request.

Each target is started in turn as a subprocess pinned to CPU 0 (``taskset -c 0``) and driven over
real HTTP by this process, pinned to CPU 1, at a fixed concurrency (C connections, one request in
flight on each). Every request is a distinct Clerk ``user.created`` event with its own svix-id,
signed beforehand, so deduplication cannot shortcut anything and signing costs nothing in the
timed phase. A warm-up (not timed) precedes each measurement.

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

    .venv/bin/python bench/ingest.py                  # N=5000 per target, C=32
    .venv/bin/python bench/ingest.py --targets relay --repeat 3 \
        --database-url postgresql://postgres@127.0.0.1:5432/test --replicas 2
    .venv/bin/python bench/ingest.py --events 20000 --concurrency 64 --targets relay,baseline
    .venv/bin/python bench/ingest.py --targets relay --with-worker
    .venv/bin/python bench/ingest.py --profile /tmp/prof   # py-spy on relay during its run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _common as c

from relay.secret import Secret
from relay.store import redact_url
from relay.verify import sign

PATH = "/webhooks/clerk"


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes
    raw: bytes  # the whole HTTP/1.1 request, for the raw client


@dataclass
class Result:
    target: str
    events: int
    latencies_ms: list[float]
    errors: int
    first_error: str
    meters: Meters
    stored: str = ""
    commits: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.meters.seconds if self.meters.seconds else 0.0

    @property
    def other_cpu(self) -> float:
        """Busy time of the whole machine (in cores) not explained by the processes measured
        (the servers, PostgreSQL working for them, this load generator): other processes."""
        m = self.meters
        return max(0.0, m.machine - m.server_cpu - m.pg_cpu - m.load_cpu)

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
        return c.percentile(sorted(self.latencies_ms), q)


def make_requests(n: int, secret: str, port: int, tag: str) -> list[Request]:
    """``n`` distinct, correctly signed user.created requests (signed now: valid for 300 s)."""
    key = Secret(secret)
    timestamp = int(time.time())
    out = []
    for i, body in enumerate(c.user_created_bodies(n, tag)):
        msg_id = f"msg_{tag}_{i:08d}_{timestamp}"
        headers = {
            "content-type": "application/json",
            "svix-id": msg_id,
            "svix-timestamp": str(timestamp),
            "svix-signature": sign(key, msg_id, timestamp, body),
        }
        head = f"POST {PATH} HTTP/1.1\r\nhost: {c.HOST}:{port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out.append(Request(headers, body, head.encode() + body))
    return out


# --- load generators ----------------------------------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams; a request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(c.HOST, self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the raw client")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # perf_counter at each request's start
    errors: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def error(self, text: str) -> None:
        self.errors += 1
        self.kinds[text[:120]] += 1


async def drive_raw(conns: list[RawConnection], requests: Sequence[Request]) -> Tally:
    tally = Tally()
    it = iter(requests)
    clock = time.perf_counter

    async def worker(conn: RawConnection) -> None:
        for req in it:
            t0 = clock()
            try:
                status, body = await conn.request(req.raw)
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                await conn.close()
                continue
            tally.latencies_ms.append((clock() - t0) * 1000)
            tally.started.append(t0)
            if status != 200:
                tally.error(f"{status} {body[:100]!r}")

    await asyncio.gather(*(worker(conn) for conn in conns))
    return tally


async def drive_httpx(
    client: object, urls: Sequence[str], c_: int, requests: Sequence[Request]
) -> Tally:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    tally = Tally()
    it = iter(requests)
    clock = time.perf_counter

    async def worker(url: str) -> None:
        for req in it:
            t0 = clock()
            try:
                response = await client.post(url, content=req.body, headers=req.headers)
            except httpx.HTTPError as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                continue
            tally.latencies_ms.append((clock() - t0) * 1000)
            tally.started.append(t0)
            if response.status_code != 200:
                tally.error(f"{response.status_code} {response.text[:100]}")

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(c_)))
    return tally


@dataclass
class Meters:
    """CPU use over the timed phase, as fractions of one core: this process (the load), the
    server processes (each replica), PostgreSQL's processes working for them (if any), and the
    whole machine (every process on every CPU)."""

    server_pids: list[int]
    pg_pids: Callable[[], set[int]] | None = None  # PostgreSQL processes serving the replicas
    seconds: float = 0.0
    load_cpu: float = 0.0
    server_cpus: list[float] = field(default_factory=list)
    pg_cpu: float = 0.0
    machine: float = 0.0
    steal: float = 0.0  # the hypervisor's, in cores: see c.MachineMeter

    def __post_init__(self) -> None:
        self._me = c.CpuMeter(c.PID_SELF)
        self._servers = [c.CpuMeter(pid) for pid in self.server_pids]
        self._pg = c.GroupCpuMeter(self.pg_pids) if self.pg_pids else None
        self._machine = c.MachineMeter()

    @property
    def server_cpu(self) -> float:
        return sum(self.server_cpus)

    def start(self) -> None:
        if self._pg:
            self._pg.start()
        for meter in (self._me, *self._servers):
            meter.start()
        self._machine.start()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.machine = self._machine.stop()
        self.steal = self._machine.steal
        self.load_cpu = self._me.stop()
        self.server_cpus = [m.stop() for m in self._servers]
        self.pg_cpu = self._pg.stop() if self._pg else 0.0


async def load(
    ports: Sequence[int],
    warmup: Sequence[Request],
    timed: Sequence[Request],
    concurrency: int,
    client: str,
    meters: Meters,
    during: Callable[[], None] = lambda: None,
) -> Tally:
    """Run the warm-up, then the timed phase (metered); returns the timed phase's tally.
    Connection i goes to ``ports[i % len(ports)]`` (round-robin over the replicas)."""
    if client == "raw":
        conns = [RawConnection(ports[i % len(ports)]) for i in range(concurrency)]
        await drive_raw(conns, warmup)
        during()
        meters.start()
        tally = await drive_raw(conns, timed)
        meters.stop()
        for conn in conns:
            await conn.close()
        return tally
    import httpx

    urls = [f"http://{c.HOST}:{port}{PATH}" for port in ports]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as hc:
        await drive_httpx(hc, urls, concurrency, warmup)
        during()
        meters.start()
        tally = await drive_httpx(hc, urls, concurrency, timed)
        meters.stop()
    return tally


# --- targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    """What runs for one target: its server processes (one per replica) and their ports, and
    where relay stores (none for the baseline)."""

    label: str
    procs: list[c.Proc]
    ports: list[int]
    db: c.Database | None = None
    helpers: list[c.Proc] = field(default_factory=list)  # not measured as the server


def replica_cpu(i: int) -> int:
    """Replica i runs on CPU i % cores (replica 0 on the server CPU, as a single server)."""
    return (c.SERVER_CPU + i) % (os.cpu_count() or 1)


def start_target(name: str, tmp: Path, secret: str, args: argparse.Namespace, run: int) -> Target:
    """Start target ``name``: one server pinned to the server CPU, or for relay on PostgreSQL
    ``--replicas`` servers, replica i pinned to CPU i % cores, on a fresh schema."""
    py = sys.executable
    stem = f"{name.replace(':', '-')}.{run}"
    log = tmp / f"{stem}.log"
    path = tmp / f"{stem}.db"
    port = args.port or c.free_port()
    if name == "baseline":
        argv = [py, str(c.BENCH / "baseline_app.py"), "--port", str(port)]
        env = {"BENCH_SECRET": secret}
        proc = c.Proc(name, argv, cpu=c.SERVER_CPU, log_path=log, env=env)
        return Target(name, [proc], [port])
    if name == "naive":
        argv = [py, str(c.BENCH / "naive_app.py"), "--port", str(port)]
        env = {"BENCH_SECRET": secret, "BENCH_DB": str(path)}
        proc = c.Proc(name, argv, cpu=c.SERVER_CPU, log_path=log, env=env)
        return Target(name, [proc], [port], c.Database.sqlite(path))
    if name == "relay" or name.startswith("relay:"):
        helpers = []
        sink_url = f"http://{c.HOST}:9/unused"  # never called with --no-worker
        if args.with_worker:  # deliveries go to a fake sink on the load CPU, as they arrive
            sink_port = c.free_port()
            sink_argv = [py, str(c.BENCH / "fake_sink.py"), "--port", str(sink_port)]
            helpers.append(
                c.Proc("fake sink", sink_argv, cpu=c.LOAD_CPU, log_path=tmp / f"{stem}.sink.log")
            )
            c.wait_http(helpers[0], sink_port)
            sink_url = f"http://{c.HOST}:{sink_port}/hook"
        rules, templates = c.write_rules(tmp, sink_url=sink_url)
        if args.database_url:
            db = c.Database.postgres(args.database_url)
            print(f"  {db.upgrade()}", flush=True)
        else:
            db = c.Database.sqlite(path)
        env = c.relay_env(db.url, secret, rules, templates)
        procs, ports = [], []
        roles = [] if args.with_worker else ["--no-worker"]
        for i in range(args.replicas):
            port_i = port if i == 0 else c.free_port()
            if name == "relay":
                argv = [str(c.RELAY_BIN), "serve", *roles, "--port", str(port_i)]
            else:  # an experiment: bench/relay_variants.py VARIANT
                variant = name.partition(":")[2]
                argv = [py, str(c.BENCH / "relay_variants.py"), variant, *roles]
                argv += ["--port", str(port_i)]
            log_i = log if args.replicas == 1 else tmp / f"{stem}.r{i}.log"
            procs.append(c.Proc(f"{name}#{i}", argv, cpu=replica_cpu(i), log_path=log_i, env=env))
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
            profilers.append(c.Profiler(args.profile, stem, proc.pid, args.profile_mode))
    try:
        for proc, port in zip(target.procs, target.ports, strict=True):
            c.wait_http(proc, port)
        tag = f"{run}{int(time.time()) % 100000}"
        # The Host header names the first port; servers here ignore it.
        warmup = make_requests(args.warmup, secret, target.ports[0], tag + "w")
        timed = make_requests(args.events, secret, target.ports[0], tag + "t")
        pids = {proc.pid for proc in target.procs}
        pg_pids = None
        if db is not None and db.is_postgres:
            admin = db.admin_url

            def pg_pids() -> set[int]:
                return c.postgres_serving(admin, pids)

        meters = Meters([proc.pid for proc in target.procs], pg_pids)

        relay = name.startswith("relay")
        commits_before: list[dict[str, float]] = []

        def during() -> None:
            if relay:
                commits_before.extend(c.commit_stats(port) for port in target.ports)
            for profiler in profilers:
                profiler.start()

        tally = asyncio.run(
            load(target.ports, warmup, timed, args.concurrency, args.client, meters, during)
        )
        for profiler in profilers:
            profiler.stop()
        stored = ""
        if db is not None:
            events = db.count("SELECT COUNT(*) FROM events")
            deliveries = db.count("SELECT COUNT(*) FROM deliveries")
            stored = f"{events} events, {deliveries} deliveries"
            if events != len(warmup) + len(timed) - tally.errors:
                stored += " (MISMATCH)"
        commits = ""
        if relay:
            after = [c.commit_stats(port) for port in target.ports]
            commits = c.commit_text(after, commits_before)
        first_error = tally.kinds.most_common(1)[0][0] if tally.kinds else ""
        if args.latency_log:
            t_first = min(tally.started, default=0.0)
            with args.latency_log.open("a") as f:
                for t0, ms in zip(tally.started, tally.latencies_ms, strict=True):
                    f.write(f"{target.label},{run},{t0 - t_first:.6f},{ms:.3f}\n")
        return Result(
            target.label,
            len(timed),
            tally.latencies_ms,
            tally.errors,
            first_error,
            meters,
            stored,
            commits,
        )
    finally:
        for proc in target.procs:
            code = proc.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(f"  {proc.name} exited with {code}:\n{proc.tail()}")
            note = [line for line in proc.tail(5).splitlines() if "group commit" in line]
            if note:
                print(f"  {note[-1]}")
        for helper in target.helpers:
            helper.stop()
        if db is not None and db.is_postgres and not args.keep:
            db.drop()


def server_cpu_text(r: Result) -> str:
    """The servers' CPU: one figure, or each replica's and their sum."""
    cpus = r.meters.server_cpus
    if len(cpus) == 1:
        return f"{100 * cpus[0]:.0f}%"
    return "+".join(f"{100 * x:.0f}" for x in cpus) + f"={100 * sum(cpus):.0f}%"


def median_result(results: list[Result]) -> Result:
    """The run with the median throughput."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000, help="timed events per target (5000)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed events first (500)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight (32)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument(
        "--targets",
        default="baseline,naive,relay",
        help="comma-separated: baseline, naive, relay, or relay:VARIANT (an experiment of "
        "bench/relay_variants.py, e.g. relay:group or relay:group+nolog)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load client: raw asyncio streams (default, cheapest) or httpx.AsyncClient",
    )
    parser.add_argument("--profile", type=Path, help="run py-spy on the targets, write here")
    parser.add_argument("--profile-targets", default="relay", help="which targets to profile")
    parser.add_argument(
        "--profile-mode",
        choices=sorted(c.Profiler.MODES),
        default="cpu",
        help="py-spy samples: cpu (running threads only), wall (idle too: waits, fsync), "
        "gil (threads holding the GIL)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per target; median shown")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument(
        "--latency-log", type=Path, help="append target,run,start_s,latency_ms lines here"
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
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.database_url and not c.is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (the default is SQLite)")
    if not 1 <= args.replicas <= 8:
        parser.error("--replicas must be 1..8")
    if args.replicas > 1 and not args.database_url:
        parser.error("--replicas > 1 needs --database-url (replicas share a PostgreSQL store)")
    args.profile_targets = set(args.profile_targets.split(","))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    load_cpu = args.load_cpu or ("1" if args.replicas == 1 else "any")
    if load_cpu == "1":
        c.pin_self(c.LOAD_CPU)
    else:
        c.unpin_self()
    secret = c.new_secret()
    cpus = os.cpu_count() or 1
    if args.replicas > 1:
        servers = ", ".join(f"replica {i} on CPU {replica_cpu(i)}" for i in range(args.replicas))
    else:
        servers = f"server on CPU {c.SERVER_CPU}"
    print(
        f"ingest bench: {args.events} events per target (+{args.warmup} warm-up), "
        f"concurrency {args.concurrency}, client {args.client}; {servers}, "
        f"load on {'CPU ' + str(c.LOAD_CPU) if load_cpu == '1' else 'any CPU'}"
        f" ({cpus} CPUs)"
    )
    if args.database_url:
        print(
            f"relay stores in {c.postgres_server(args.database_url)} at "
            f"{redact_url(args.database_url)} (unpinned, on the same {cpus} CPUs), "
            f"{args.replicas} replica(s); baseline and naive are unchanged"
        )
    if args.replicas >= cpus:
        print(
            f"note: {args.replicas} replicas on {cpus} CPUs: the load generator and PostgreSQL "
            "share the replicas' cores; the CPU columns say who used what"
        )
    print(c.describe_relay())
    runs: dict[str, list[Result]] = {name: [] for name in targets}
    with c.workdir(keep=args.keep) as tmp:
        p50, p90 = c.commit_latency_ms(tmp)
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
                    + f"; server CPU {server_cpu_text(r)}"
                    + (f", PostgreSQL CPU {100 * r.meters.pg_cpu:.0f}%" if r.meters.pg_pids else "")
                    + f", load CPU {100 * r.meters.load_cpu:.0f}%"
                    + f", other load {100 * r.other_cpu:.0f}%, steal {100 * r.meters.steal:.0f}%"
                    + (f"; stored {r.stored}" if r.stored else "")
                    + (f"\n  {r.commits}" if r.commits else ""),
                    flush=True,
                )
    results = [median_result(rs) for rs in runs.values()]
    print()
    if args.repeat > 1:
        print(f"(median of {args.repeat} runs by throughput)")
    rows = [
        (
            r.target,
            f"{r.rate:,.0f}",
            f"{r.p(0.5):.1f}",
            f"{r.p(0.99):.1f}",
            r.errors,
            server_cpu_text(r),
            f"{r.cpu_ms_per_event:.2f}",
            f"{100 * r.meters.pg_cpu:.0f}%" if r.meters.pg_pids else "-",
            f"{r.pg_ms_per_event:.2f}" if r.meters.pg_pids else "-",
            f"{100 * r.other_cpu:.0f}%",
            f"{100 * r.meters.steal:.0f}%",
            f"{100 * r.meters.load_cpu:.0f}%",
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
        "load CPU",
    ]
    print(c.fmt_table(headers, rows))
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
    busy = [r.target for r in results if r.meters.load_cpu > 0.85]
    if busy:
        print(
            f"warning: the load generator used > 85% of its core for {', '.join(busy)}: "
            "the figures for those may be load-bound, not server-bound"
        )
    noisy = [r.target for r in results if r.other_cpu > 0.10]
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
                        "other_cpu": r.other_cpu,
                        "machine_cpu": r.meters.machine,
                        "steal_cpu": r.meters.steal,
                        "load_cpu": r.meters.load_cpu,
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
