"""The naive store for bench/ingest.py: verify, then INSERT + COMMIT per request on the loop.

The design relay must beat by 2x: every request runs its own SQLite transaction (WAL,
synchronous=FULL, so one fsync per request) directly on the event loop thread. It writes what
relay writes for an accepted event with one delivery (one events row, one deliveries row, into
relay's own schema, created by opening a SQLiteStore first), deduplicating on svix-id.

    BENCH_SECRET=whsec_... BENCH_DB=/tmp/naive.db python bench/naive_app.py --port 8101
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import VerificationError
from relay.ids import idempotency_key, new_id
from relay.secret import Secret
from relay.sources.signing import SvixVerifier
from relay.store import SQLiteStore


def open_db(path: Path) -> sqlite3.Connection:
    async def make_schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(make_schema())
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def create_app(secret: str, conn: sqlite3.Connection) -> Starlette:
    verifier = SvixVerifier([Secret(secret)])

    async def ingest(request: Request) -> Response:
        body = await request.body()
        try:
            verified = verifier.verify(body, request.headers)
        except VerificationError as exc:
            return JSONResponse({"status": "rejected", "reason": str(exc)}, status_code=400)
        try:
            event = json.loads(body)
        except ValueError:
            return JSONResponse({"status": "rejected", "reason": "bad json"}, status_code=400)
        event_type = event.get("type") if isinstance(event, dict) else None
        if not isinstance(event_type, str):
            return JSONResponse({"status": "rejected", "reason": "no type"}, status_code=400)
        now = time.time()
        event_id = new_id("evt")
        message_id = verified.message_id
        # The naive part: a blocking transaction + fsync on the event loop, per request.
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO events (id, source, message_id, type, received_at, body)"
                " VALUES (?, 'clerk', ?, ?, ?, ?) ON CONFLICT (source, message_id) DO NOTHING",
                (event_id, message_id, event_type, now, body),
            )
            if cursor.rowcount:
                conn.execute(
                    "INSERT INTO deliveries (id, event_id, rule, send_index, sink,"
                    " idempotency_key, status, next_attempt_at, created_at, updated_at)"
                    " VALUES (?, ?, 'bench', 0, 'hook', ?, 'pending', ?, ?, ?)",
                    (
                        new_id("dlv"),
                        event_id,
                        idempotency_key("clerk", message_id, "bench", 0),
                        now,
                        now,
                        now,
                    ),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        outcome = "accepted" if cursor.rowcount else "duplicate"
        return JSONResponse({"status": outcome, "event_id": event_id})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/webhooks/clerk", ingest, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    conn = open_db(Path(os.environ["BENCH_DB"]))
    uvicorn.run(
        create_app(os.environ["BENCH_SECRET"], conn),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
        http="httptools",  # the stack relay serve and the baseline use
        loop="asyncio",
    )


if __name__ == "__main__":
    main()
