"""Baseline for bench/ingest.py: verify the Svix signature, answer 200, store nothing.

A minimal Starlette app served by uvicorn with the settings ``relay serve`` uses (same uvicorn,
asyncio loop, httptools HTTP protocol, log_level warning, no access log, no server header), so the
difference between this and relay is what relay does beyond verification. It parses the body with
the standard library's ``json`` (relay's ``deepjson`` uses orjson where it agrees: about 6 us of
an event's 160 us here).

    BENCH_SECRET=whsec_... python bench/baseline_app.py --port 8100
"""

from __future__ import annotations

import argparse
import json
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import VerificationError
from relay.secret import Secret
from relay.sources.signing import SvixVerifier


def create_app(secret: str) -> Starlette:
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
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return JSONResponse({"status": "rejected", "reason": "no type"}, status_code=400)
        return JSONResponse({"status": "accepted", "svix_id": verified.message_id})

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
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        create_app(os.environ["BENCH_SECRET"]),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
        http="httptools",
        loop="asyncio",
    )


if __name__ == "__main__":
    main()
