"""Hostile load: ingest beside a /metrics flood over a long backlog; a crowd of half-sent bodies.

Two measurements, each of a fresh relay pinned to CPU 0 (``taskset -c 0``), its load on CPU 1:

  ingest   ``relay serve --no-worker`` on a store holding --pending (100,000) pending
           deliveries, as after a sink was down for an hour. wrk posts distinct pre-signed Clerk
           user.created events on --connections (32) connections for --seconds: alone, and
           while a second wrk fetches /metrics on --flood (32) more connections. Each is run
           --repeat (3) times, alternating; reported: events/s and p50/p99 of each run, their
           median and spread, and whether ingest beside the flood is within 10% of alone
           (events/s and p50).
  bodies   ``relay serve`` (empty store): --bodies (800) connections each send the headers of a
           1 MiB webhook and half its body, and stop. RSS (VmRSS) when it is ready, once all are
           sent, and 5 s after they are closed; how many were answered 503.

--relay-bin runs another relay build the same way (e.g. the main branch's, for a before/after).

    .venv/bin/python bench/hostile.py                       # both, at the defaults
    .venv/bin/python bench/hostile.py --only ingest --pending 20000 --repeat 1
    .venv/bin/python bench/hostile.py --relay-bin /work/main/.venv/bin/relay
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import _wrk
from _backlog import create_schema, fill_backlog
from _fixtures import new_secret, relay_env, svix_headers, user_created_bodies, write_rules
from _meters import proc_status_kb
from _procs import HOST, LOAD_CPU, RELAY_BIN, SERVER_CPU, Proc, free_port, pin_self, wait_http
from _procs import workdir as make_workdir
from _report import describe_relay, fmt_table

GOAL = 0.10  # beside the flood, ingest within 10% of alone


@dataclass
class IngestRun:
    kind: str  # alone | flood
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    wrapped: int
    flood_rate: float = 0.0  # /metrics answered per second


@dataclass
class BodiesRun:
    ready_mb: float
    sent_mb: float
    closed_mb: float
    answered_503: int
    sent: int
    failed: int


def start_relay(
    relay_bin: str, tmp: Path, db: Path, secret: str, name: str, *args: str
) -> tuple[Proc, int]:
    rules, templates = write_rules(tmp, sink_url=f"http://{HOST}:9/unused")
    port = free_port()
    proc = Proc(
        f"relay ({name})",
        [relay_bin, "serve", "--port", str(port), *args],
        cpu=SERVER_CPU,
        log_path=tmp / f"{name}.log",
        env={**relay_env(db, secret, rules, templates), "RELAY_LOG_LEVEL": "warning"},
    )
    wait_http(proc, port, timeout_s=120)
    return proc, port


def ingest_script(tmp: Path, secret: str, count: int, name: str) -> Path:
    """``count`` distinct user.created webhooks, signed now, as a wrk script."""
    now = int(time.time())
    tag = uuid.uuid4().hex[:8]
    requests = []
    for i, body in enumerate(user_created_bodies(count, tag)):
        headers = svix_headers(secret, f"msg_{tag}_{i:07d}", now, body)
        requests.append(_wrk.raw_request("POST", "/webhooks/clerk", headers, body))
    return _wrk.write_script(tmp / f"{name}.lua", requests)


def ingest_run(
    args: argparse.Namespace, tmp: Path, db: Path, secret: str, kind: str, n: int
) -> IngestRun:
    proc, port = start_relay(args.relay_bin, tmp, db, secret, f"{kind}{n}", "--no-worker")
    url = f"http://{HOST}:{port}"
    try:
        warm = ingest_script(tmp, secret, 2000, f"warm{kind}{n}")
        _wrk.run(url, warm, connections=args.connections, seconds=2)
        script = ingest_script(tmp, secret, args.requests, f"{kind}{n}")
        flood = None
        if kind == "flood":
            metrics = _wrk.path_script(tmp / "metrics.lua", "GET", "/metrics")
            flood = _wrk.start(url, metrics, connections=args.flood, seconds=args.seconds + 3)
            time.sleep(1.0)
        result = _wrk.run(url, script, connections=args.connections, seconds=args.seconds)
        flood_rate = 0.0
        if flood is not None:
            out, _ = flood.communicate(timeout=args.seconds + 30)
            flood_rate = _wrk.parse(out).rate
    finally:
        proc.stop(grace_s=10)
    return IngestRun(
        kind,
        result.rate,
        result.latency_ms.get(50, 0.0),
        result.latency_ms.get(99, 0.0),
        result.errors,
        result.wrapped,
        flood_rate,
    )


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def half_sent_bodies(port: int, count: int) -> tuple[list[Connection], int]:
    """``count`` connections, each having sent a 1 MiB webhook's headers and half its body."""
    size = 1024 * 1024
    head = (
        f"POST /webhooks/clerk HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"svix-id: msg_x\r\nsvix-timestamp: 1\r\nsvix-signature: v1,AAAA\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    half = b" " * (size // 2)

    async def one() -> Connection | None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(head + half)
            await asyncio.wait_for(writer.drain(), 60)
            return reader, writer
        except (OSError, TimeoutError):
            return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    sent = [c for c in opened if c is not None]
    return sent, count - len(sent)


async def answers_503(connections: Sequence[Connection]) -> int:
    """How many of these connections were answered 503 (what each has received by now)."""

    async def peek(reader: asyncio.StreamReader) -> bool:
        with contextlib.suppress(TimeoutError, OSError):
            return (await asyncio.wait_for(reader.read(12), 0.5)).startswith(b"HTTP/1.1 503")
        return False

    return sum(await asyncio.gather(*(peek(reader) for reader, _ in connections)))


def bodies_run(args: argparse.Namespace, tmp: Path, secret: str) -> BodiesRun:
    db = tmp / "bodies.db"
    create_schema(db)
    proc, port = start_relay(args.relay_bin, tmp, db, secret, "bodies")

    def rss_mb() -> float:
        return proc_status_kb(proc.pid)["VmRSS"] / 1024

    async def drive() -> BodiesRun:
        ready = rss_mb()
        connections, failed = await half_sent_bodies(port, args.bodies)
        await asyncio.sleep(2.0)
        loaded = rss_mb()
        refused = await answers_503(connections)
        for _, writer in connections:
            writer.transport.abort()
        await asyncio.sleep(5.0)
        return BodiesRun(ready, loaded, rss_mb(), refused, len(connections), failed)

    try:
        return asyncio.run(drive())
    finally:
        proc.stop(grace_s=10)


def report_ingest(runs: list[IngestRun], pending: int) -> dict[str, object]:
    rows = [
        (r.kind, f"{r.rate:.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", r.errors, r.wrapped,
         f"{r.flood_rate:.0f}" if r.kind == "flood" else "")
        for r in runs
    ]  # fmt: skip
    headers = ["run", "events/s", "p50 ms", "p99 ms", "errors", "wrapped", "/metrics per s"]
    print(fmt_table(headers, rows))
    summary: dict[str, object] = {}
    for kind in ("alone", "flood"):
        mine = [r for r in runs if r.kind == kind]
        if mine:
            summary[kind] = {
                "events_per_s": _wrk.median_spread([r.rate for r in mine]),
                "p50_ms": _wrk.median_spread([r.p50_ms for r in mine]),
            }
    if "alone" in summary and "flood" in summary:
        alone, flood = summary["alone"], summary["flood"]
        rate_ratio = flood["events_per_s"][0] / alone["events_per_s"][0]  # type: ignore[index]
        p50_ratio = flood["p50_ms"][0] / alone["p50_ms"][0]  # type: ignore[index]
        met = rate_ratio >= 1 - GOAL and p50_ratio <= 1 + GOAL
        for kind in ("alone", "flood"):
            rate, p50 = summary[kind]["events_per_s"], summary[kind]["p50_ms"]  # type: ignore[index]
            print(
                f"{kind:5}: median {rate[0]:.0f} events/s (spread {rate[1]:.0f}-{rate[2]:.0f}),"
                f" p50 {p50[0]:.2f} ms ({p50[1]:.2f}-{p50[2]:.2f})"
            )
        print(
            f"with {pending} pending: beside the /metrics flood ingest keeps {rate_ratio:.0%} of"
            f" its events/s and its p50 is {p50_ratio:.2f}x: goal (within 10%)"
            f" {'met' if met else 'MISSED'}"
        )
        summary["goal_met"] = met
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["ingest", "bodies"], help="run one measurement")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per ingest run (8)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--flood", type=int, default=32, help="/metrics connections (32)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30_000, help="distinct events per run")
    parser.add_argument("--bodies", type=int, default=800)
    parser.add_argument("--relay-bin", default=str(RELAY_BIN))
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    pin_self(LOAD_CPU)
    print(f"hostile bench: relay {args.relay_bin} on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}")
    print(describe_relay())
    secret = new_secret()
    results: dict[str, object] = {"relay_bin": args.relay_bin}
    with make_workdir(keep=args.keep) as tmp:
        if args.only in (None, "ingest"):
            db = tmp / "backlog.db"
            took = fill_backlog(db, args.pending)
            print(f"backlog: {args.pending} pending deliveries written in {took:.1f} s")
            runs = []
            for n in range(args.repeat):
                order = ("alone", "flood") if n % 2 == 0 else ("flood", "alone")
                for kind in order:
                    print(f"- ingest {kind} #{n + 1} ...", flush=True)
                    runs.append(ingest_run(args, tmp, db, secret, kind, n))
            results["ingest"] = {
                "runs": [asdict(r) for r in runs],
                **report_ingest(runs, args.pending),
            }
        if args.only in (None, "bodies"):
            print(f"- {args.bodies} half-sent 1 MiB bodies ...", flush=True)
            bodies = bodies_run(args, tmp, secret)
            print(
                f"RSS: ready {bodies.ready_mb:.0f} MB; {bodies.sent} connections with half a"
                f" 1 MiB body ({bodies.failed} could not send it, {bodies.answered_503} answered"
                f" 503): {bodies.sent_mb:.0f} MB; 5 s after they closed: {bodies.closed_mb:.0f} MB"
            )
            results["bodies"] = asdict(bodies)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
