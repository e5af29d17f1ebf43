"""Retention under load: 1,000,000 old delivered events purged by `relay serve` while ingest runs.

A SQLite store is filled in bulk with EVENTS user.created events received 40 days ago, each with
one delivered delivery and its attempt (what a month of traffic leaves), plus PENDING old events
whose delivery is still pending (scheduled a year out, so the worker leaves it alone). `relay
serve` (ingest + worker, dry-run sinks) starts on CPU 0 with `retention: {events: 30d}`; its
background purge begins 30 s after start. After a 5 s warm-up, wrk on CPU 1 (a closed loop of C
connections, each request a distinct signed event) measures ingest for 15 s before the purge
begins and for 60 s while it runs; then the bench waits for the pass to finish and checks that
every pending delivery and its event are still there, untouched.

    .venv/bin/python bench/retention.py                  # 1,000,000 old events (~1 min to fill)
    .venv/bin/python bench/retention.py --events 100000  # quicker

Needs wrk (`apt-get install wrk`). Figures go in RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from _backlog import create_schema
from _fixtures import new_secret, relay_env, user_created_bodies, write_rules
from _procs import (
    HOST,
    LOAD_CPU,
    RELAY_BIN,
    SERVER_CPU,
    Proc,
    free_port,
    pin_self,
    taskset,
    wait_http,
    workdir,
)

from relay.secret import Secret
from relay.sources.signing import sign

DAY = 86400.0
PATH = "/webhooks/clerk"
CHUNK = 50_000

# wrk sends request i % #ids of the table the bench writes: a distinct svix-id, its signature,
# one body for all (Svix deduplicates on the id, and the signature covers id, time and body).
WRK_SCRIPT = """
local ids, sigs = {}, {}
for line in io.lines("%(ids)s") do
  local id, sig = line:match("([^ ]+) (.+)")
  ids[#ids + 1] = id
  sigs[#sigs + 1] = sig
end
local body = io.open("%(body)s", "rb"):read("*a")
local n = 0
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["svix-timestamp"] = "%(ts)s"
request = function()
  n = n + 1
  local i = (n - 1) %% #ids + 1
  wrk.headers["svix-id"] = ids[i]
  wrk.headers["svix-signature"] = sigs[i]
  return wrk.format(nil, "%(path)s")
end
"""


def fill(db: Path, events: int, pending: int) -> float:
    """The old history, in bulk: ``events`` delivered (one delivery and one attempt each) and
    ``pending`` whose delivery is pending, due in a year; all received 40 days ago."""
    create_schema(db)
    started = time.perf_counter()
    old = time.time() - 40 * DAY
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")  # a bulk fill; relay itself syncs every commit
        for start in range(0, events + pending, CHUNK):
            count = min(CHUNK, events + pending - start)
            bodies = user_created_bodies(count, f"old{start}_")
            rows_e, rows_d, rows_a = [], [], []
            for j, body in enumerate(bodies):
                i = start + j
                at = old + i * 0.001
                final = i < events
                rows_e.append((f"evt_old{i:09d}", "clerk", f"msg_old{i:09d}", "user.created",
                               at, body))  # fmt: skip
                rows_d.append((f"dlv_old{i:09d}", f"evt_old{i:09d}", "bench", 0, "hook",
                               f"key_old{i:09d}", "delivered" if final else "pending",
                               1 if final else 0, at + 1 if final else time.time() + 365 * DAY,
                               at, at + 1, at + 1 if final else None))  # fmt: skip
                if final:
                    rows_a.append((f"dlv_old{i:09d}", 1, at + 0.5, 42.0, 200, None, "delivered"))
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows_e)
            conn.executemany(
                "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key,"
                " status, attempts, next_attempt_at, created_at, updated_at, delivered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows_d,
            )
            conn.executemany(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code,"
                " error, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows_a,
            )
            conn.execute("COMMIT")
            print(f"\r  filled {start + count:,} / {events + pending:,}", end="", flush=True)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    print()
    return time.perf_counter() - started


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    finally:
        conn.close()


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of relay's /metrics (0 when absent)."""
    text = http_text(port, "/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if wanted else "")) + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def http_text(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wrk(
    folder: Path, port: int, secret: str, tag: str, seconds: int, conns: int
) -> dict[str, float]:
    """A wrk run of ``seconds`` with ``conns`` connections of distinct signed events; its
    requests/s and latency percentiles (ms), and the non-2xx count."""
    body = user_created_bodies(1, tag)[0]
    ts = int(time.time())
    (folder / f"{tag}.body").write_bytes(body)
    ids = folder / f"{tag}.ids"
    n = 4000 * seconds  # more than one core of relay ingests in that time
    ids.write_text("".join(
        f"msg_{tag}{i:08d} {sign(Secret(secret), f'msg_{tag}{i:08d}', ts, body)}\n"
        for i in range(n)
    ))  # fmt: skip
    script = folder / f"{tag}.lua"
    script.write_text(WRK_SCRIPT % {"ids": ids, "body": folder / f"{tag}.body", "ts": ts,
                                    "path": PATH})  # fmt: skip
    argv = [*taskset(LOAD_CPU), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
            "-s", str(script), f"http://{HOST}:{port}"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([0-9.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(bad.group(1)) if bad else 0.0
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="old delivered events")
    parser.add_argument("--pending", type=int, default=1_000, help="old pending deliveries")
    parser.add_argument("--seconds", type=int, default=60, help="the wrk run during the purge (60)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/retention.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    pin_self(LOAD_CPU)
    with workdir(args.keep) as folder:
        db = folder / "relay.db"
        print(f"filling {args.events:,} old delivered events and {args.pending:,} pending ...")
        fill_s = fill(db, args.events, args.pending)
        size_mb = db.stat().st_size / 1e6
        print(f"  {fill_s:.0f} s, {size_mb:,.0f} MB")
        secret = new_secret()
        rules, templates = write_rules(folder, sink_url="http://127.0.0.1:9/unused")
        rules.write_text(rules.read_text() + "retention:\n  events: 30d\n")
        port = free_port()
        env = {**relay_env(db, secret, rules, templates), "RELAY_DRY_RUN": "1",
               "RELAY_LOG_LEVEL": "warning"}  # fmt: skip
        started = time.monotonic()
        relay = Proc("relay", [str(RELAY_BIN), "serve", "--port", str(port)], cpu=SERVER_CPU,
                     log_path=folder / "relay.log", env=env)  # fmt: skip
        wait_http(relay, port, "/readyz", timeout_s=60)
        wrk(folder, port, secret, "warmup", 5, args.connections)
        before = wrk(folder, port, secret, "before", min(args.seconds, 15), args.connections)
        purged_then = metric(port, "relay_purged_rows_total", table="events")
        while metric(port, "relay_purged_rows_total", table="events") == 0:
            time.sleep(0.2)  # the pass starts 30 s after relay did
        purge_started = time.monotonic()
        during = wrk(folder, port, secret, "during", args.seconds, args.connections)
        purged_during = metric(port, "relay_purged_rows_total", table="events")
        while metric(port, "relay_retention_last_purge_timestamp_seconds") == 0:
            time.sleep(0.5)
        purge_s = time.monotonic() - purge_started
        purged = {t: metric(port, "relay_purged_rows_total", table=t)
                  for t in ("events", "deliveries", "attempts")}  # fmt: skip
        relay.stop()
        pending = count(db, "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_id"
                        " WHERE d.status = 'pending' AND d.id LIKE 'dlv_old%'")  # fmt: skip
        left_old = count(db, "SELECT COUNT(*) FROM events WHERE id LIKE 'evt_old%'")
        ingested = count(db, "SELECT COUNT(*) FROM events WHERE id NOT LIKE 'evt_old%'")
        print(json.dumps({"before": before, "during": during}, indent=2))
        print(
            f"purge: {purged['events']:,.0f} events, {purged['deliveries']:,.0f} deliveries,"
            f" {purged['attempts']:,.0f} attempts in {purge_s:.0f} s"
            f" ({purged['events'] / purge_s:,.0f} events/s; {purged_during - purged_then:,.0f}"
            f" of them during the {args.seconds} s measured);"
            f" relay up {time.monotonic() - started:.0f} s"
        )
        print(f"ingest before the purge: {before['rps']:,.0f} req/s, p50 {before['p50_ms']:.1f}"
              f" ms, p99 {before['p99_ms']:.1f} ms, {before['non_2xx']:.0f} non-2xx")  # fmt: skip
        print(f"ingest during the purge: {during['rps']:,.0f} req/s, p50 {during['p50_ms']:.1f}"
              f" ms, p99 {during['p99_ms']:.1f} ms, {during['non_2xx']:.0f} non-2xx")  # fmt: skip
        print(
            f"old pending deliveries still pending, with their events: {pending:,} of"
            f" {args.pending:,}; old events left: {left_old:,}; events ingested: {ingested:,}"
        )
        ok = (
            pending == args.pending and left_old == args.pending and purged["events"] == args.events
        )
        print("OK" if ok else "MISMATCH")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
