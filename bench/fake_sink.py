"""A fast fake HTTP sink for the delivery and memory benchmarks (127.0.0.1 only).

Raw asyncio streams, HTTP/1.1 keep-alive, Content-Length bodies. Every POST is answered
``200 {}`` (after ``--delay`` seconds, if set) and counted; ``GET /stats`` returns
``{"count", "first", "last"}`` (wall-clock times of the first and last counted request) and
``POST /reset`` zeroes them. With ``--record`` it also keeps, for each POST, its
``Idempotency-Key`` and the wall-clock time its request had been read (before ``--delay``);
``GET /log`` returns them as ``{"records": [[key, time], ...]}`` (the end-to-end latency and
exactly-once checks of ``service.py``). Nothing else: it exists to be cheaper than what it
measures.

    python bench/fake_sink.py --port 8200 [--delay 60] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Sink:
    def __init__(self, delay_s: float, record: bool = False) -> None:
        self.delay_s = delay_s
        self.record = record
        self.records: list[tuple[str, float]] = []
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, rest = head.partition(b"\r\n")
                method, path = request_line.split(b" ")[:2]
                length, key = 0, b""
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip()
                if length:
                    await reader.readexactly(length)
                if path == b"/stats":
                    body = json.dumps(
                        {"count": self.count, "first": self.first, "last": self.last}
                    ).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    continue
                if path == b"/log":
                    body = json.dumps({"records": self.records}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    continue
                if path == b"/reset":
                    self.count, self.first, self.last = 0, 0.0, 0.0
                    self.records = []
                    writer.write(_OK)
                    continue
                if method == b"GET" and path == b"/healthz":
                    writer.write(_OK)
                    continue
                if self.record:
                    self.records.append((key.decode(errors="replace"), time.time()))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                now = time.time()
                if not self.count:
                    self.first = now
                self.count += 1
                self.last = now
                writer.write(_OK)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def serve(host: str, port: int, delay_s: float, record: bool = False) -> None:
    sink = Sink(delay_s, record)
    server = await asyncio.start_server(sink.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--record", action="store_true", help="keep each POST's Idempotency-Key and time (/log)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.delay, args.record))


if __name__ == "__main__":
    main()
