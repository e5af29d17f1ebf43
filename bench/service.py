"""The whole service: `relay serve` (ingest and worker in one process) against a slow sink.

`relay serve` runs alone on CPU 0 with a SQLite store and a rules file sending every Clerk
user.created to one `http` sink (``--sink-concurrency``, 32 by default) that is
bench/fake_sink.py answering each POST after ``--sink-delay`` (50 ms), on CPU 1 with wrk. Every
webhook is a distinct, correctly signed event. Each run (a fresh relay, store and sink):

1. **steady**: wrk paced to ``--rate`` (200) events/s on ``--paced-connections`` (16) for a
   warm-up of ``--warmup`` s, then ``--seconds`` s timed. For each timed event: the latency
   from wrk writing the webhook (its send log) to the sink having read the message (the sink's
   log, by Idempotency-Key; same machine clock), and from relay's stored ``received_at`` to the
   same. Target: p99 ≤ 50 ms, i.e. ≤ 100 ms to the sink's answer.
2. **saturation**: wrk closed-loop on ``--connections`` (32) for ``--saturate`` s: events
   accepted per second and wrk's ingest p99 (target ≤ 50 ms), and the deliveries the sink read
   over the same window against the bound ``concurrency / delay`` (32 / 50 ms = 640/s). Target:
   deliveries ≥ 0.8 x the bound while ingest keeps its p99.
3. **exactly once**: once the backlog has drained, every stored delivery is `delivered` and the
   sink read each Idempotency-Key exactly once.

    .venv/bin/python bench/service.py                 # 3 runs, about 2 minutes
    .venv/bin/python bench/service.py --repeat 5 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import _wrk
import _wrkfile
from _fixtures import new_secret, relay_env, svix_headers, user_created_bodies, write_rules
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
    wait_http,
    workdir,
)
from _profile import Profiler
from _report import describe_relay, fmt_table, percentile

PATH = "/webhooks/clerk"


@dataclass(frozen=True, slots=True)
class Busy:
    """CPU over a phase, as fractions of one core: relay, the sink, wrk, other processes, and
    the hypervisor's steal."""

    relay: float
    sink: float
    wrk: float
    other: float
    steal: float

    def text(self) -> str:
        return (
            f"relay {100 * self.relay:.0f}%, sink {100 * self.sink:.0f}%, wrk"
            f" {100 * self.wrk:.0f}%, other CPU {100 * self.other:.0f}%, steal"
            f" {100 * self.steal:.0f}%"
        )


@dataclass(frozen=True, slots=True)
class Steady:
    offered: float  # wrk's requests/s
    events: int  # timed events matched to a sink read
    ingest_p99_ms: float
    sent_p50_ms: float  # wrk's write -> the sink's read
    sent_p99_ms: float
    received_p50_ms: float  # relay's received_at -> the sink's read
    received_p99_ms: float
    errors: int
    busy: Busy


@dataclass(frozen=True, slots=True)
class Saturation:
    accepted: float  # events/s, wrk's 2xx
    ingest_p50_ms: float
    ingest_p99_ms: float
    delivered: float  # the sink's reads/s over wrk's window
    errors: int
    wrapped: int
    busy: Busy


@dataclass(frozen=True, slots=True)
class Once:
    """After the drain: stored deliveries, how many are delivered, and the sink's reads."""

    deliveries: int
    delivered: int
    read: int
    distinct: int
    missing: int  # stored keys the sink never read

    @property
    def ok(self) -> bool:
        return self.deliveries == self.delivered == self.read == self.distinct and not self.missing


def signed(secret: str, n: int, tag: str, port: int) -> tuple[list[bytes], list[str]]:
    """``n`` distinct user.created webhooks signed now, as raw requests, and their svix-ids."""
    now = int(time.time())
    requests, ids = [], []
    for i, body in enumerate(user_created_bodies(n, tag)):
        msg_id = f"msg_{tag}_{i:07d}"
        headers = svix_headers(secret, msg_id, now, body)
        requests.append(_wrk.raw_request("POST", PATH, headers, body))
        ids.append(msg_id)
    return requests, ids


def query(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def drain(db: Path, timeout_s: float) -> float:
    """Wait until no stored delivery is left undelivered; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        left = query(db, "SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'")[0][0]
        if not left:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def sink_reads(port: int) -> list[tuple[str, float]]:
    return [(key, at) for key, at in http_get_json(port, "/log")["records"]]


def run_wrk(
    url: str, script: Path, connections: int, seconds: float, relay: Proc, sink: Proc
) -> tuple[_wrk.WrkResult, Busy, float, float]:
    """wrk for ``seconds`` in the background: its report, how busy everyone was meanwhile, and
    its window (wall-clock start and end)."""
    before = _children_cpu()
    t0 = time.time()
    wrk = _wrk.start(url, script, connections=connections, seconds=seconds)
    meters = Meters([relay.pid, sink.pid], [PID_SELF])
    meters.start()
    out, err = wrk.communicate()
    meters.stop()
    t1 = time.time()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {err.strip()}")
    wrk_cpu = (_children_cpu() - before) / (t1 - t0)  # the one child reaped meanwhile: wrk
    relay_cpu, sink_cpu = meters.server_cpus
    other = max(0.0, meters.other_cpu - wrk_cpu)
    return _wrk.parse(out), Busy(relay_cpu, sink_cpu, wrk_cpu, other, meters.steal), t0, t1


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def steady(
    args: argparse.Namespace, tmp: Path, db: Path, url: str, secret: str, procs: tuple[Proc, Proc]
) -> Steady:
    """The paced phase: a warm-up, then ``--seconds`` timed at ``--rate``; the latencies of the
    timed events once all are delivered."""
    relay, sink = procs
    n_warm = int(args.rate * args.warmup) + 50
    n_timed = int(args.rate * args.seconds * 1.2) + 100
    warm = _wrkfile.write_script(
        tmp / "warm.lua", *signed(secret, n_warm, "w", args.port), rate=args.rate
    )
    _wrk.run(url, warm, connections=args.paced_connections, seconds=args.warmup)
    log = tmp / "sent.log"
    requests, ids = signed(secret, n_timed, "s", args.port)
    script = _wrkfile.write_script(tmp / "steady.lua", requests, ids, rate=args.rate, log=log)
    result, used, _, _ = run_wrk(url, script, args.paced_connections, args.seconds, relay, sink)
    drain(db, 60)
    sent = _wrkfile.read_log(log)
    read = dict(reversed(sink_reads(args.sink_port)))  # the first read of each key
    from_sent, from_received = [], []
    rows = query(
        db,
        "SELECT e.message_id, e.received_at, d.idempotency_key FROM events e"
        " JOIN deliveries d ON d.event_id = e.id WHERE e.message_id LIKE 'msg_s_%'",
    )
    for msg_id, received_at, key in rows:
        at = read.get(str(key))
        if at is None:
            continue
        from_received.append(1000 * (at - float(received_at)))  # type: ignore[arg-type]
        if str(msg_id) in sent:
            from_sent.append(1000 * (at - sent[str(msg_id)]))
    from_sent.sort()
    from_received.sort()
    return Steady(
        offered=result.rate,
        events=len(from_sent),
        ingest_p99_ms=result.latency_ms.get(99, float("nan")),
        sent_p50_ms=percentile(from_sent, 0.5),
        sent_p99_ms=percentile(from_sent, 0.99),
        received_p50_ms=percentile(from_received, 0.5),
        received_p99_ms=percentile(from_received, 0.99),
        errors=result.errors + result.wrapped,
        busy=used,
    )


def saturation(
    args: argparse.Namespace, tmp: Path, url: str, secret: str, procs: tuple[Proc, Proc]
) -> Saturation:
    """The closed-loop phase: wrk as fast as relay answers; the sink's reads over its window."""
    relay, sink = procs
    requests, ids = signed(secret, args.saturation_requests, "x", args.port)
    script = _wrkfile.write_script(tmp / "saturate.lua", requests, ids)
    result, used, t0, t1 = run_wrk(url, script, args.connections, args.saturate, relay, sink)
    reads = sum(1 for _, at in sink_reads(args.sink_port) if t0 <= at <= t1)
    return Saturation(
        accepted=result.rate,
        ingest_p50_ms=result.latency_ms.get(50, float("nan")),
        ingest_p99_ms=result.latency_ms.get(99, float("nan")),
        delivered=reads / (t1 - t0),
        errors=result.errors,
        wrapped=result.wrapped,
        busy=used,
    )


def exactly_once(db: Path, sink_port: int) -> Once:
    """Every stored delivery delivered, and read by the sink exactly once."""
    keys = {str(k) for (k,) in query(db, "SELECT idempotency_key FROM deliveries")}
    delivered = query(db, "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'")[0][0]
    reads = Counter(key for key, _ in sink_reads(sink_port))
    return Once(
        deliveries=len(keys),
        delivered=int(delivered),  # type: ignore[call-overload]
        read=sum(reads.values()),
        distinct=len(reads),
        missing=len(keys - set(reads)),
    )


def run_once(args: argparse.Namespace, tmp: Path, run: int) -> tuple[Steady, Saturation, Once]:
    """One run: a fresh sink, relay and store; the steady phase, saturation, the check."""
    args.sink_port, args.port = free_port(), free_port()
    sink_argv = [sys.executable, str(BENCH / "fake_sink.py"), "--port", str(args.sink_port)]
    sink_argv += ["--delay", str(args.sink_delay), "--record"]
    sink = Proc("fake sink", sink_argv, cpu=LOAD_CPU, log_path=tmp / f"sink.{run}.log")
    wait_http(sink, args.sink_port)
    rules, templates = write_rules(
        tmp, sink_url=f"http://{HOST}:{args.sink_port}/hook", concurrency=args.sink_concurrency
    )
    secret, db = new_secret(), tmp / f"relay.{run}.db"
    env = relay_env(db, secret, rules, templates)
    argv = [str(RELAY_BIN), "serve", "--port", str(args.port)]
    if args.variant:  # an experiment (bench/relay_variants.py), ingest and worker as serve
        argv = [sys.executable, str(BENCH / "relay_variants.py"), args.variant]
        argv += ["--port", str(args.port)]
    relay = Proc("relay", argv, cpu=SERVER_CPU, log_path=tmp / f"relay.{run}.log", env=env)
    url = f"http://{HOST}:{args.port}"
    try:
        wait_http(relay, args.port, "/readyz")
        calm = steady(args, tmp, db, url, secret, (relay, sink))
        profiler = None
        if args.profile:
            name = f"{args.profile_phase}.{run}"
            profiler = Profiler(args.profile, name, relay.pid, args.profile_mode)
        if profiler is not None and args.profile_phase == "saturation":
            profiler.start()
        busy_ = saturation(args, tmp, url, secret, (relay, sink))
        meters = Meters([relay.pid, sink.pid], [PID_SELF])
        meters.start()
        if profiler is not None and args.profile_phase == "drain":
            profiler.start()
        t0 = time.time()
        drained_s = drain(db, args.drain_timeout)
        meters.stop()
        if profiler is not None:
            profiler.stop()
        reads = sum(1 for _, at in sink_reads(args.sink_port) if t0 <= at)
        once = exactly_once(db, args.sink_port)
        print(
            f"  run {run}: the backlog left drained in {drained_s:.1f} s: {reads:,} deliveries,"
            f" {reads / drained_s:,.0f}/s with no ingest, relay CPU"
            f" {100 * meters.server_cpus[0]:.0f}%",
            flush=True,
        )
        return calm, busy_, once
    finally:
        code = relay.stop()
        if code not in (0, None, -15):
            print(f"  relay exited with {code}:\n{relay.tail()}")
        sink.stop()


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    median, low, high = _wrk.median_spread(values)
    return f"{fmt.format(median)} ({fmt.format(low)}-{fmt.format(high)})"


def report(args: argparse.Namespace, runs: list[tuple[Steady, Saturation, Once]]) -> bool:
    """Per-run tables, then the medians and spreads against the targets; True if all met."""
    bound = args.sink_concurrency / args.sink_delay
    rows = [
        [i, f"{s.offered:.1f}", s.events, f"{s.ingest_p99_ms:.1f}",
         f"{s.sent_p50_ms:.1f}", f"{s.sent_p99_ms:.1f}", f"{s.received_p50_ms:.1f}",
         f"{s.received_p99_ms:.1f}", s.errors, s.busy.text()]
        for i, (s, _, _) in enumerate(runs)
    ]  # fmt: skip
    print(f"\nsteady: wrk paced to {args.rate:g}/s on {args.paced_connections} connections,"
          f" {args.seconds:g} s timed; latency to the sink's read of the message (ms)")  # fmt: skip
    print(fmt_table(["run", "offered/s", "events", "ingest p99", "sent p50", "sent p99",
                     "stored p50", "stored p99", "errors", "CPU"], rows))  # fmt: skip
    rows = [
        [i, f"{x.accepted:,.0f}", f"{x.ingest_p50_ms:.1f}", f"{x.ingest_p99_ms:.1f}",
         f"{x.delivered:,.0f}", f"{x.delivered / bound:.2f}", x.errors + x.wrapped,
         "ok" if o.ok else f"MISMATCH {o}", x.busy.text()]
        for i, (_, x, o) in enumerate(runs)
    ]  # fmt: skip
    window = f"{args.connections} connections, {args.saturate:g} s"
    limit = f"{args.sink_concurrency}/{1000 * args.sink_delay:g} ms = {bound:,.0f}/s"
    print(f"\nsaturation: wrk closed-loop, {window}; bound {limit}")
    print(fmt_table(["run", "accepted/s", "ingest p50", "ingest p99", "delivered/s",
                     "x bound", "errors", "exactly once", "CPU"], rows))  # fmt: skip
    calm = [s for s, _, _ in runs]
    full = [x for _, x, _ in runs]
    sent_p99 = _wrk.median_spread([s.sent_p99_ms for s in calm])[0]
    ingest_p99 = _wrk.median_spread([x.ingest_p99_ms for x in full])[0]
    ratio = _wrk.median_spread([x.delivered / bound for x in full])[0]
    once = all(o.ok for _, _, o in runs)
    delay_ms = 1000 * args.sink_delay
    met = {
        "steady p99 ≤ 50 ms (+ the sink's 50 ms)": sent_p99 <= 50,
        "saturation ingest p99 ≤ 50 ms": ingest_p99 <= 50,
        "saturation deliveries ≥ 0.8 x bound": ratio >= 0.8,
        "exactly once": once,
    }
    print(f"\nmedian (min-max) of {len(runs)} runs; {describe_relay()}")
    print(f"  steady offered/s        {spread([s.offered for s in calm], '{:.1f}')}")
    print(f"  steady sent → read p50  {spread([s.sent_p50_ms for s in calm], '{:.1f}')} ms")
    print(f"  steady sent → read p99  {spread([s.sent_p99_ms for s in calm], '{:.1f}')} ms"
          f"  (to the sink's answer: + {delay_ms:g} ms)")  # fmt: skip
    print(f"  steady stored → read p50 {spread([s.received_p50_ms for s in calm], '{:.1f}')} ms,"
          f" p99 {spread([s.received_p99_ms for s in calm], '{:.1f}')} ms")  # fmt: skip
    print(f"  steady ingest p99       {spread([s.ingest_p99_ms for s in calm], '{:.1f}')} ms")
    print(f"  saturation accepted/s   {spread([x.accepted for x in full])}")
    print(f"  saturation ingest p99   {spread([x.ingest_p99_ms for x in full], '{:.1f}')} ms")
    print(f"  saturation delivered/s  {spread([x.delivered for x in full])}"
          f" = {spread([x.delivered / bound for x in full], '{:.2f}')} x {bound:,.0f}")  # fmt: skip
    for name, ok in met.items():
        print(f"  {'met   ' if ok else 'MISSED'}  {name}")
    noisy = [x.busy for x in full] + [s.busy for s in calm]
    if any(b.other > 0.1 or b.steal > 0.05 for b in noisy):
        print("  warning: other CPU above 10% or steal above 5% in some phase: the machine was"
              " busy; rerun when it is quiet")  # fmt: skip
    if args.json:
        data = {"runs": [{"steady": asdict(s), "saturation": asdict(x), "once": asdict(o)}
                         for s, x, o in runs], "met": met}  # fmt: skip
        args.json.write_text(json.dumps(data, indent=2))
    return all(met.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0, help="steady events/s (200)")
    parser.add_argument("--seconds", type=float, default=15.0, help="steady, timed (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="steady warm-up seconds (2)")
    parser.add_argument("--paced-connections", type=int, default=16)
    parser.add_argument("--saturate", type=float, default=6.0, help="saturation seconds (6)")
    parser.add_argument("--connections", type=int, default=32, help="saturation wrk (32)")
    parser.add_argument("--saturation-requests", type=int, default=16_000,
                        help="distinct webhooks signed for the saturation phase")  # fmt: skip
    parser.add_argument("--sink-concurrency", type=int, default=32)
    parser.add_argument("--sink-delay", type=float, default=0.05, help="seconds (0.05)")
    parser.add_argument("--drain-timeout", type=float, default=90.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="py-spy on relay, into DIR")
    parser.add_argument("--profile-mode", choices=sorted(Profiler.MODES), default="cpu")
    parser.add_argument(
        "--profile-phase", choices=["saturation", "drain"], default="saturation",
        help="profile the saturation phase, or the drain after it (delivery alone)",
    )  # fmt: skip
    parser.add_argument("--variant", help="run bench/relay_variants.py VARIANT instead")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/service.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    pin_self(LOAD_CPU)
    runs = []
    with workdir(args.keep) as tmp:
        for run in range(args.repeat):
            folder = tmp / f"run{run}"
            folder.mkdir()
            runs.append(run_once(args, folder, run))
        return 0 if report(args, runs) else 1


if __name__ == "__main__":
    sys.exit(main())
