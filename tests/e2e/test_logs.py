"""One log pipeline: in JSON mode every line `relay serve` writes is one JSON object, whoever
logged it (relay, uvicorn, asyncio, psycopg's pool), tracebacks included as a field.

The test provokes each library's own lines in a real process: uvicorn's, with a malformed HTTP
request; asyncio's, with a task whose exception nobody retrieves (started by a sitecustomize on
the process's PYTHONPATH: nothing in relay is patched); psycopg-pool's, by cutting the relay off
from PostgreSQL (a proxy in between stops forwarding) so that the pool fails to reconnect.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import E2EProject, Fleet, RelayProcess, wait_until, with_env

pytestmark = pytest.mark.e2e

PROVOKE_ASYNCIO = '''\
"""Loaded by site at start-up: every new event loop runs, once, a task that fails and is dropped
(asyncio then logs "Task exception was never retrieved", with the traceback)."""
import asyncio.base_events

_init = asyncio.base_events.BaseEventLoop.__init__


def _init_and_provoke(self, *args, **kwargs):
    _init(self, *args, **kwargs)

    async def fail():
        raise RuntimeError("provoked by the log test")

    self.call_soon(lambda: self.create_task(fail()) and None)


asyncio.base_events.BaseEventLoop.__init__ = _init_and_provoke
'''


class CuttableProxy:
    """A TCP forwarder to ``target`` on a port of its own; ``cut()`` drops every connection and
    refuses new ones (the database vanished, as far as the relay can tell)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                with self.lock:
                    self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[tuple[CuttableProxy, str]]:
    """A proxy to the test database, and the test schema's URL through it."""
    address = "127.0.0.1:5432"
    assert address in postgres_url, f"this test expects the database at {address}"
    forwarder = CuttableProxy(("127.0.0.1", 5432))
    try:
        yield forwarder, postgres_url.replace(address, f"127.0.0.1:{forwarder.port}")
    finally:
        forwarder.cut()


def parsed(relay: RelayProcess) -> list[dict[str, Any]]:
    """Every line the relay wrote to stdout and stderr, each parsed as one JSON object."""
    lines = []
    for number, text in enumerate(relay.log().splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {text!r}") from None
        assert isinstance(line, dict), f"line {number} is not a JSON object: {text!r}"
        lines.append(line)
    return lines


def test_every_line_is_json_whoever_logs_it(
    e2e_project: E2EProject, fleet: Fleet, proxy: tuple[CuttableProxy, str], tmp_path: Path
) -> None:
    """uvicorn (a malformed request), asyncio (an unretrieved task exception) and psycopg-pool
    (reconnecting to a database that is gone) each log through relay's pipeline: every line of
    the process's output, to its last, parses as a JSON object, tracebacks included as fields."""
    forwarder, url = proxy
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(PROVOKE_ASYNCIO, encoding="utf-8")
    project = with_env(
        e2e_project, RELAY_DATABASE_URL=url, RELAY_LOG_FORMAT="json", PYTHONPATH=str(hooks)
    )
    relay = fleet.start(project)

    with socket.create_connection(("127.0.0.1", relay.port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        with contextlib.suppress(OSError):
            conn.recv(1024)
    forwarder.cut()

    def seen() -> list[dict[str, Any]] | None:
        loggers = {line["logger"] for line in parsed(relay)}
        return parsed(relay) if {"uvicorn.error", "asyncio", "psycopg.pool"} <= loggers else None

    wait_until("uvicorn, asyncio and psycopg.pool lines", seen, timeout_s=30)
    relay.stop()
    lines = parsed(relay)
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["uvicorn.error"]["msg"] == "Invalid HTTP request received."
    assert by_logger["asyncio"]["msg"].startswith("Task exception was never retrieved")
    assert "RuntimeError: provoked by the log test" in by_logger["asyncio"]["exception"]
    assert by_logger["psycopg.pool"]["level"] == "warning"
    assert {"ts", "level", "logger", "msg"} <= set(lines[-1])
