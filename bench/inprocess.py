"""The application's own share of ingest CPU, without uvicorn, h11 or sockets.

Each target is built in a fresh process pinned to CPU 0 and called directly over ASGI by 32
concurrent in-process clients (no HTTP parsing, no network, no load generator competing for the
machine), so what differs between targets is only what the app itself does per event. The figure
is the process's CPU time per event, all threads, user and kernel apart, and split by thread:
the event loop's and the others' (the store's commit thread). It moves much less than
`ingest.py`'s throughput on a shared VM; use it to attribute costs, and `ingest.py` for targets.

    .venv/bin/python bench/inprocess.py [--events 6000] [--repeat 3]
        [--targets baseline,relay,relay:nolog,relay:nostore,relay:nosql]

Targets: ``baseline`` (bench/baseline_app.py), ``relay`` (the app `relay serve --no-worker`
builds, SQLite store in a temp dir, JSON log lines to a file), and relay with one thing changed:
``nolog`` (relay's logger at WARNING), ``nostore`` (ingest answers without the store),
``nosql`` (the store's group commit, thread hand-off and futures, but no SQL: what the
hand-off costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _fixtures import new_secret, relay_env, svix_headers, user_created_bodies, write_rules
from _procs import HOST, SERVER_CPU, taskset

CONCURRENCY = 32
WARMUP = 512
TARGETS = ("baseline", "relay", "relay:nolog", "relay:nostore", "relay:nosql")


def build_app(target: str, secret: str, tmp: Path) -> Any:
    if target == "baseline":
        import baseline_app

        return baseline_app.create_app(secret)
    from relay_variants import NoStore

    from relay import logs
    from relay.cli._shared import load
    from relay.server.app import create_app
    from relay.settings import Settings
    from relay.store import sqlite as sqlite_store
    from relay.store import sqlite_writes
    from relay.store.steps import ACCEPTED

    rules, templates = write_rules(tmp, sink_url="http://127.0.0.1:9/unused")
    os.environ.update(relay_env(tmp / "relay.db", secret, rules, templates))
    settings = Settings.from_env().with_(worker=False)
    log_file = (tmp / "relay.log").open("w")
    logs.configure("json", stream=log_file)
    variant = target.partition(":")[2]
    if variant == "nolog":
        logging.getLogger("relay").setLevel(logging.WARNING)
    if variant == "nosql":
        sqlite_writes.ingest_batch = lambda conn, batch: [ACCEPTED] * len(batch)
    config = load(settings, "serve", log_file)
    assert config is not None, "bench rules do not load"
    store_type = NoStore if variant == "nostore" else sqlite_store.SQLiteStore
    return create_app(settings, config, store_type(tmp / "relay.db"))


def requests(secret: str, n: int) -> list[tuple[list[tuple[bytes, bytes]], bytes]]:
    now = int(time.time())
    signed = []
    for i, body in enumerate(user_created_bodies(n, "inproc")):
        msg_id = f"msg_inproc{i:08d}"
        headers = svix_headers(secret, msg_id, now, body)
        headers["content-length"] = str(len(body))
        signed.append(([(k.encode(), v.encode()) for k, v in headers.items()], body))
    return signed


async def drive(app: Any, signed: list[tuple[list[tuple[bytes, bytes]], bytes]]) -> None:
    """Every request through the app, CONCURRENCY at a time; each must be a 200."""
    pending = iter(signed)

    async def client() -> None:
        for headers, body in pending:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/webhooks/clerk",
                "raw_path": b"/webhooks/clerk",
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": (HOST, 50000),
                "server": (HOST, 8000),
            }
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            sent: list[dict[str, Any]] = []

            async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()  # never: the body was read whole
                raise AssertionError

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def child(target: str, events: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="relay-inproc-") as tmp:
        return await measure(target, events, Path(tmp))


async def measure(target: str, events: int, tmp: Path) -> dict[str, float]:
    secret = new_secret()
    app = build_app(target, secret, tmp)
    signed = requests(secret, WARMUP + events)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    await drive(app, signed[:WARMUP])
    before, loop_before, t0 = os.times(), time.thread_time(), time.perf_counter()
    await drive(app, signed[WARMUP:])
    after, loop_cpu, wall = os.times(), time.thread_time() - loop_before, time.perf_counter() - t0
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await lifespan
    return {
        "user_us": (after.user - before.user) / events * 1e6,
        "sys_us": (after.system - before.system) / events * 1e6,
        "loop_us": loop_cpu / events * 1e6,
        "events_s": events / wall,
    }


def run_child(target: str, events: int) -> dict[str, float]:
    argv = [*taskset(SERVER_CPU), sys.executable, __file__, "--child", target]
    done = subprocess.run(
        [*argv, "--events", str(events)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{target} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="baseline,relay,relay:nolog,relay:nostore,relay:nosql")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.events))))
        return 0
    targets = args.targets.split(",")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    print(
        f"in-process ingest: {args.events} events per run, {CONCURRENCY} concurrent clients, CPU 0"
    )
    results: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    for run in range(args.repeat):
        for target in targets:  # interleaved, so every target sees the same machine load
            r = run_child(target, args.events)
            results[target].append(r)
            print(
                f"  {target} (run {run + 1}/{args.repeat}): {r['user_us'] + r['sys_us']:.0f} us "
                f"CPU/event (user {r['user_us']:.0f}, sys {r['sys_us']:.0f}; event loop"
                f" thread {r['loop_us']:.0f}), "
                f"{r['events_s']:,.0f} events/s"
            )
    print(f"\n(median of {args.repeat} runs)")
    print(
        f"{'target':<16} {'CPU us/event':>12} {'user':>6} {'sys':>6} {'loop':>6} {'others':>6}"
        f" {'events/s':>9}"
    )
    medians = {}
    for target, runs in results.items():
        cpu = statistics.median(r["user_us"] + r["sys_us"] for r in runs)
        medians[target] = cpu
        user = statistics.median(r["user_us"] for r in runs)
        sys_us = statistics.median(r["sys_us"] for r in runs)
        loop = statistics.median(r["loop_us"] for r in runs)
        others = statistics.median(r["user_us"] + r["sys_us"] - r["loop_us"] for r in runs)
        rate = statistics.median(r["events_s"] for r in runs)
        print(
            f"{target:<16} {cpu:>12.0f} {user:>6.0f} {sys_us:>6.0f} {loop:>6.0f} {others:>6.0f}"
            f" {rate:>9,.0f}"
        )
    if "baseline" in medians:
        for target, cpu in medians.items():
            if target != "baseline":
                print(f"{target} - baseline: {cpu - medians['baseline']:+.0f} us CPU per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
