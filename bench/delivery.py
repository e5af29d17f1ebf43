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

    .venv/bin/python bench/delivery.py                       # N=5000, concurrency 32
    .venv/bin/python bench/delivery.py --deliveries 20000 --concurrency 64
    .venv/bin/python bench/delivery.py --profile /tmp/prof   # py-spy on the worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import _common as c

DELIVERED = "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'"
NOT_OK = "SELECT COUNT(*) FROM deliveries WHERE status IN ('failed', 'dead')"


@dataclass
class Outcome:
    target: str
    deliveries: int
    seconds: float
    errors: int
    cpu: float  # fraction of one core used by the process under test
    note: str = ""

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


# --- the baseline client (runs as its own pinned process) --------------------------------------


def load_requests(db: Path) -> list[tuple[bytes, dict[str, str]]]:
    """The body and headers the http sink sends for each pending delivery (envelope as JSON)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT e.body, d.idempotency_key FROM deliveries d JOIN events e"
            " ON e.id = d.event_id WHERE d.status = 'pending' ORDER BY d.next_attempt_at, d.id"
        ).fetchall()
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


def run_baseline(db: Path, sink_port: int, concurrency: int, tmp: Path) -> Outcome:
    c.http_get_json(sink_port, "/reset", method="POST")
    argv = [
        *c.taskset(c.SERVER_CPU),
        sys.executable,
        str(Path(__file__).resolve()),
        "--client-only",
        "--db",
        str(db),
        "--url",
        f"http://{c.HOST}:{sink_port}/hook",
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"baseline client failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stats = c.http_get_json(sink_port, "/stats")
    note = f"sink counted {stats['count']}"
    return Outcome(
        "httpx baseline", result["n"], result["seconds"], result["errors"], result["cpu"], note
    )


def run_relay(
    db: Path,
    n: int,
    sink_port: int,
    concurrency: int,
    tmp: Path,
    secret: str,
    profile: Path | None,
    timeout_s: float,
    variant: str = "",
) -> Outcome:
    c.http_get_json(sink_port, "/reset", method="POST")
    rules, templates = c.write_rules(
        tmp, sink_url=f"http://{c.HOST}:{sink_port}/hook", concurrency=concurrency
    )
    env = c.relay_env(db, secret, rules, templates)
    env["RELAY_SHUTDOWN_GRACE_S"] = "2"
    port = c.free_port()
    if variant:
        argv = [sys.executable, str(c.BENCH / "relay_variants.py"), variant, "--worker-only"]
        argv += ["--port", str(port)]
    else:
        argv = [str(c.RELAY_BIN), "worker", "--port", str(port)]
    proc = c.Proc("relay worker", argv, cpu=c.SERVER_CPU, log_path=tmp / "worker.log", env=env)
    profiler = c.Profiler(profile, "worker", proc.pid, "cpu") if profile else None
    try:
        deadline = time.monotonic() + timeout_s
        stats = {"count": 0}
        while not stats["count"]:
            if not proc.alive():
                raise RuntimeError(f"relay worker exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no delivery reached the sink in {timeout_s} s:\n{proc.tail()}")
            time.sleep(0.01)
            stats = c.http_get_json(sink_port, "/stats")
        if profiler:
            profiler.start()
        meter = c.CpuMeter(proc.pid)
        meter.start()
        delivered = 0
        while delivered < n:
            if not proc.alive():
                raise RuntimeError(f"relay worker exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
            delivered = c.count_rows(db, DELIVERED)
        end = time.time()
        cpu = meter.stop()
        if profiler:
            profiler.stop()
        stats = c.http_get_json(sink_port, "/stats")
        errors = c.count_rows(db, NOT_OK)
        seconds = end - stats["first"]
        note = f"sink counted {stats['count']}, {delivered} delivered in the db"
        if delivered < n:
            note += f" (TIMED OUT after {timeout_s} s)"
        name = f"relay worker ({variant})" if variant else "relay worker"
        return Outcome(name, delivered, seconds, errors, cpu, note)
    finally:
        proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=5000, help="backlog size (5000)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="sink concurrency = client workers (32)"
    )
    parser.add_argument("--timeout", type=float, default=100.0, help="give up after (s)")
    parser.add_argument("--profile", type=Path, help="run py-spy on the worker, write here")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; median shown")
    parser.add_argument(
        "--variant",
        default="",
        help="also run this experiment of bench/relay_variants.py (e.g. stock+claimidx)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    # internal: the baseline client process
    parser.add_argument("--client-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_only:
        return client_main(args)
    if not 1 <= args.deliveries <= 1_000_000 or not 1 <= args.concurrency <= 256:
        parser.error("--deliveries must be 1..1000000 and --concurrency 1..256")
    c.pin_self(c.LOAD_CPU)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(
        f"delivery bench: {args.deliveries} deliveries, concurrency {args.concurrency}; "
        f"worker / client on CPU {c.SERVER_CPU}, fake sink and this process on CPU {c.LOAD_CPU}"
    )
    print(c.describe_relay())
    secret = c.new_secret()
    with c.workdir(keep=args.keep) as tmp:
        p50, p90 = c.commit_latency_ms(tmp)
        print(f"disk: one SQLite commit (WAL, synchronous=FULL) takes {p50:.2f} ms (p90 {p90:.2f})")
        sink_port = c.free_port()
        sink = c.Proc(
            "fake sink",
            [sys.executable, str(c.BENCH / "fake_sink.py"), "--port", str(sink_port)],
            cpu=c.LOAD_CPU,
            log_path=tmp / "sink.log",
        )
        c.wait_http(sink, sink_port)
        runs: dict[str, list[Outcome]] = {}
        for run in range(args.repeat):
            db = tmp / f"relay.{run}.db"
            seconds = c.fill_backlog(db, args.deliveries)
            print(f"backlog: {args.deliveries} pending deliveries written in {seconds:.1f} s")
            print("- httpx baseline ...", flush=True)
            r = run_baseline(db, sink_port, args.concurrency, tmp)
            runs.setdefault("baseline", []).append(r)
            print(f"  {r.rate:,.0f} deliveries/s, CPU {100 * r.cpu:.0f}%", flush=True)
            for variant in ["", args.variant] if args.variant else [""]:
                if variant:  # a fresh backlog for the experiment
                    db = tmp / f"relay.{run}.{variant}.db"
                    c.fill_backlog(db, args.deliveries)
                print(f"- relay worker {variant} ...", flush=True)
                r = run_relay(
                    db,
                    args.deliveries,
                    sink_port,
                    args.concurrency,
                    tmp,
                    secret,
                    args.profile,
                    args.timeout,
                    variant,
                )
                runs.setdefault(variant or "relay", []).append(r)
                print(f"  {r.rate:,.0f} deliveries/s, CPU {100 * r.cpu:.0f}%", flush=True)
            for path in tmp.glob("relay.*.db*"):
                path.unlink()
        results = [sorted(rs, key=lambda o: o.rate)[len(rs) // 2] for rs in runs.values()]
    print()
    rows = [
        (
            r.target,
            r.deliveries,
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            r.errors,
            f"{100 * r.cpu:.0f}%",
            r.note,
        )
        for r in results
    ]
    print(
        c.fmt_table(
            ["target", "deliveries", "seconds", "deliveries/s", "errors", "CPU", "note"], rows
        )
    )
    if args.repeat > 1:
        print(f"(median of {args.repeat} runs)")
    base, relay = results[0], results[1]
    ratio = relay.rate / base.rate if base.rate else 0.0
    print(f"\nrelay / httpx baseline: {ratio:.2f}  (target >= 0.70)")
    for other in results[2:]:
        print(f"{other.target} / httpx baseline: {other.rate / base.rate:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "deliveries": r.deliveries,
                        "seconds": r.seconds,
                        "per_s": r.rate,
                        "errors": r.errors,
                        "cpu": r.cpu,
                    }
                    for r in results
                ]
                + [{"ratio": ratio}],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
