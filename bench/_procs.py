"""Processes and their lifecycle: where things run, pinned subprocesses, readiness, clean-up.

Every subprocess started through ``Proc`` is stopped on exit (normal return, exception, Ctrl-C
or SIGTERM), so a benchmark never leaves a server behind; what else must go at exit (the
PostgreSQL schemas of ``_database``) registers with ``on_cleanup`` and runs after the processes
are stopped. Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_BIN = Path(sys.executable).parent
RELAY_BIN = VENV_BIN / "relay"
HOST = "127.0.0.1"
SERVER_CPU = 0  # the server under test
LOAD_CPU = 1  # load generator, fake sinks, samplers
PID_SELF = os.getpid()

_LIVE: list[Proc] = []
_CLEANUPS: list[Callable[[bool], None]] = []  # each called with keep, after stop_all()


def pin_self(cpu: int | None) -> None:
    """Pin this process (all its threads, and what it starts from now on) to one CPU, if the
    machine has it; ``None``: let it run on every CPU."""
    if cpu is None:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    elif cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def replica_cpu(i: int) -> int:
    """Replica (or worker) i runs on CPU i % cores: replica 0 on the server CPU, as a single
    server."""
    return (SERVER_CPU + i) % (os.cpu_count() or 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def taskset(cpu: int | None) -> list[str]:
    """The ``taskset`` prefix pinning a command to ``cpu`` (nothing if taskset is missing, or
    for ``None``: the command inherits this process's CPUs)."""
    if cpu is not None and shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu)]
    return []


class Proc:
    """A pinned subprocess whose output goes to a log file; stopped by ``stop()`` or at exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            [*taskset(cpu), *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or REPO,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the server
        )
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop(grace_s=5.0)


def on_cleanup(cleanup: Callable[[bool], None]) -> None:
    """Run ``cleanup(keep)`` once the processes are stopped: at the end of ``workdir`` and at
    exit (``keep`` False)."""
    _CLEANUPS.append(cleanup)


def _clean_up(keep: bool) -> None:
    stop_all()
    for cleanup in _CLEANUPS:
        cleanup(keep)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


atexit.register(_clean_up, False)
signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A temporary directory for databases, rules and logs; removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        yield path
    finally:
        _clean_up(keep)
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def wait_http(proc: Proc, port: int, path: str = "/healthz", timeout_s: float = 30.0) -> None:
    """Wait until ``GET path`` answers 200; raise with the process's log tail if it dies."""
    deadline = time.monotonic() + timeout_s
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready on port {port} after {timeout_s} s:\n{proc.tail()}")


def http_get_json(port: int, path: str, method: str = "GET") -> Any:
    """A tiny blocking HTTP/1.1 request to 127.0.0.1 returning the decoded JSON body."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, port), timeout=5.0) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while length is None or len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return json.loads(body) if body else None
