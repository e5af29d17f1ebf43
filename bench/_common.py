"""Shared helpers for the benchmarks: pinned subprocesses, readiness, RSS/CPU sampling, fixtures.

Everything here talks to 127.0.0.1 only. Every subprocess started through ``Proc`` is stopped on
exit (normal return, exception, Ctrl-C or SIGTERM), so a benchmark never leaves a server behind.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, ClassVar
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_BIN = Path(sys.executable).parent
RELAY_BIN = VENV_BIN / "relay"
SAMPLE_USER_CREATED = REPO / "samples" / "user.created.json"
HOST = "127.0.0.1"
SERVER_CPU = 0  # the server under test
LOAD_CPU = 1  # load generator, fake sinks, samplers
CLK_TCK = os.sysconf("SC_CLK_TCK")
PID_SELF = os.getpid()

_LIVE: list[Proc] = []


def pin_self(cpu: int) -> None:
    """Pin this process (all its threads) to one CPU, if the machine has it."""
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def unpin_self() -> None:
    """Let this process (and what it starts from now on) run on every CPU."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def new_secret() -> str:
    """A fresh Clerk-like signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


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


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def _at_exit() -> None:
    stop_all()
    drop_all_databases()


atexit.register(_at_exit)
signal.signal(signal.SIGTERM, _on_signal)


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A temporary directory for databases, rules and logs; removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        yield path
    finally:
        stop_all()
        if keep:
            for db in _DATABASES:
                print(f"(kept schema {db.schema}: {db.url})")
            _DATABASES.clear()
        drop_all_databases()
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


# --- process statistics (Linux /proc) ---------------------------------------------------------


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and friends from /proc/PID/status, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU use of a process over an interval, as a fraction of one core."""

    pid: int
    _cpu0: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        return (cpu_seconds(self.pid) - self._cpu0) / wall if wall > 0 else 0.0


# --- profiling ---


class Profiler:
    """py-spy (if installed) sampling a pid, pinned to the load CPU, raw (collapsed) output."""

    MODES: ClassVar[dict[str, list[str]]] = {"wall": ["--idle"], "cpu": [], "gil": ["--gil"]}

    def __init__(self, out_dir: Path, name: str, pid: int, mode: str = "wall") -> None:
        self.out = out_dir / f"{name}.{mode}.collapsed.txt"
        self.pid = pid
        self.mode = mode
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(exe).exists():
            print("  (py-spy not found: `.venv/bin/pip install py-spy`; not profiling)")
            return
        argv = [*taskset(LOAD_CPU), exe, "record", "--pid", str(self.pid), "--format", "raw"]
        argv += ["--rate", "250", "--threads", "--nonblocking", *self.MODES[self.mode]]
        argv += ["-o", str(self.out)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.out.exists():
            print(f"  profile ({self.mode}): {self.out}")
            print(summarise_profile(self.out))


def summarise_profile(path: Path, top: int = 12) -> str:
    """Per thread: its share of the samples, then its functions with the most self samples
    (the line a thread was on) and the relay/ functions with the most inclusive samples."""
    threads: Counter[str] = Counter()
    self_time: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        total += count
        threads[thread] += count
        if frames:
            self_time.setdefault(thread, Counter())[frames[-1]] += count
        for frame in set(frames):
            if "relay/" in frame:
                inclusive.setdefault(thread, Counter())[frame] += count
    if not total:
        return "  (empty profile)"
    lines = []
    for thread, n in threads.most_common(4):
        lines.append(f"  {thread}: {100 * n / total:.1f}% of samples")
        lines.append("    self (share of this thread):")
        for frame, k in self_time.get(thread, Counter()).most_common(top):
            lines.append(f"      {100 * k / n:5.1f}%  {frame}")
        lines.append("    relay/ inclusive:")
        for frame, k in inclusive.get(thread, Counter()).most_common(top // 2):
            lines.append(f"      {100 * k / n:5.1f}%  {frame}")
    return "\n".join(lines)


# --- fixtures ---------------------------------------------------------------------------------


def user_created_bodies(n: int, tag: str) -> list[bytes]:
    """``n`` distinct user.created events (Clerk's example, ~2.2 kB), compact JSON bytes."""
    sample = json.loads(SAMPLE_USER_CREATED.read_text())
    bodies = []
    for i in range(n):
        sample["data"]["id"] = f"user_{tag}{i:08d}"
        sample["timestamp"] = 1732700000000 + i
        bodies.append(json.dumps(sample, separators=(",", ":")).encode())
    return bodies


def write_rules(
    folder: Path,
    *,
    sink_url: str,
    concurrency: int = 32,
    timeout_s: float = 10.0,
) -> tuple[Path, Path]:
    """A bench rules.yaml (one clerk source, one http sink, one user.created rule) and an
    empty templates folder. The http send has no template, so the sink posts the envelope."""
    templates = folder / "templates"
    templates.mkdir(exist_ok=True)
    rules = folder / "rules.yaml"
    rules.write_text(
        f"""version: 1
sources:
  clerk:
    path: /webhooks/clerk
    verify: svix
    secret: ${{CLERK_WEBHOOK_SIGNING_SECRET}}
sinks:
  hook:
    type: http
    url: {sink_url}
    concurrency: {concurrency}
    timeout_s: {timeout_s}
rules:
  - name: bench
    events: user.created
    send:
      - sink: hook
"""
    )
    return rules, templates


def relay_env(db: Path | str, secret: str, rules: Path, templates: Path) -> dict[str, str]:
    """The environment of a bench relay; ``db`` is a SQLite file or a database URL."""
    return {
        "RELAY_DATABASE_URL": db if isinstance(db, str) else f"sqlite:///{db}",
        "RELAY_RULES": str(rules),
        "RELAY_TEMPLATES": str(templates),
        "RELAY_LOG_FORMAT": "json",
        "CLERK_WEBHOOK_SIGNING_SECRET": secret,
    }


def create_schema(db: Path) -> None:
    """Create the store's own schema by opening (and closing) a relay SQLiteStore."""
    from relay.store import SQLiteStore

    async def run() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    asyncio.run(run())


def backlog_rows(
    n: int, *, rule: str = "bench", sink: str = "hook"
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(events, deliveries) rows of a backlog of ``n`` user.created events, each with one
    pending delivery due now: the columns ``*_COLUMNS`` name, as the stores' ingest writes them
    (``status`` is 'pending', ``attempts`` 0 by default)."""
    from relay.ids import idempotency_key

    now = time.time()
    ms = int(now * 1000)
    events: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    for i, body in enumerate(user_created_bodies(n, "bk")):
        event_id = f"evt_{ms:012x}{i:010x}"
        message_id = f"msg_backlog_{i:08d}"
        events.append((event_id, "clerk", message_id, "user.created", now, body))
        key = idempotency_key("clerk", message_id, rule, 0)
        deliveries.append(
            (f"dlv_{ms:012x}{i:010x}", event_id, rule, 0, sink, key, "pending", now, now, now)
        )
    return events, deliveries


EVENT_COLUMNS = "id, source, message_id, type, received_at, body"
DELIVERY_COLUMNS = (
    "id, event_id, rule, send_index, sink, idempotency_key, status, next_attempt_at,"
    " created_at, updated_at"
)
_INSERT_EVENTS = (
    "INSERT INTO events (id, source, message_id, type, received_at, body) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (id, event_id, rule, send_index, sink, idempotency_key, status,"
    " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def fill_backlog(db: Path, n: int, *, rule: str = "bench", sink: str = "hook") -> float:
    """Insert ``n`` events, each with one pending delivery due now, in bulk (one transaction),
    into the store's own schema (created first through SQLiteStore). Returns the seconds taken.

    The rows are exactly what ``SQLiteStore.ingest`` writes for an accepted event with one
    delivery; bulk insertion just skips 2 fsyncs per event."""
    create_schema(db)
    t0 = time.perf_counter()
    events, deliveries = backlog_rows(n, rule=rule, sink=sink)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_EVENTS, events)
        conn.executemany(_INSERT_DELIVERIES, deliveries)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0


def count_rows(db: Path, sql: str) -> int:
    """One COUNT query on a read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        (value,) = conn.execute(sql).fetchone()
        return int(value or 0)
    finally:
        conn.close()


# --- databases: a SQLite file or a fresh PostgreSQL schema --------------------------------------

POSTGRES_SCHEMES = ("postgresql", "postgres")
_DATABASES: list[Database] = []


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).partition("://")[0] in POSTGRES_SCHEMES


class Database:
    """Where one relay run keeps its data: a SQLite file, or a schema of its own
    (``bench_<hex>``) in a PostgreSQL database, created empty and dropped by ``drop()`` (at the
    latest when the bench exits). ``url`` is what relay gets as RELAY_DATABASE_URL; for
    PostgreSQL it sets ``search_path`` to the schema through libpq's ``options``, as the
    store's tests do. ``count()`` reads through one connection kept open."""

    def __init__(self, url: str, *, path: Path | None = None, schema: str = "") -> None:
        self.url, self.path, self.schema = url, path, schema
        self._admin_url = ""
        self._conn: Any = None

    @classmethod
    def sqlite(cls, path: Path) -> Database:
        return cls(f"sqlite:///{path}", path=path)

    @classmethod
    def postgres(cls, base_url: str) -> Database:
        """A new, empty schema in the database ``base_url`` names."""
        import psycopg
        from psycopg import sql

        schema = f"bench_{secrets.token_hex(6)}"
        with psycopg.connect(base_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        options = quote(f"-csearch_path={schema}", safe="")
        url = f"{base_url}{'&' if '?' in base_url else '?'}options={options}"
        db = cls(url, schema=schema)
        db._admin_url = base_url
        _DATABASES.append(db)
        return db

    @property
    def is_postgres(self) -> bool:
        return bool(self.schema)

    @property
    def admin_url(self) -> str:
        """The URL the schema was made in (no search_path), for server-wide queries."""
        return self._admin_url

    def upgrade(self) -> str:
        """``relay db upgrade --database URL`` (the real command); returns what it printed."""
        done = subprocess.run(
            [str(RELAY_BIN), "db", "upgrade", "--database", self.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"relay db upgrade failed:\n{done.stderr[-2000:]}")
        return done.stdout.strip()

    def count(self, query: str) -> int:
        """One COUNT query (read-only for SQLite; one kept connection for PostgreSQL)."""
        if self.path is not None:
            return count_rows(self.path, query)
        if self._conn is None:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        row = self._conn.execute(query).fetchone()
        return int(row[0] or 0) if row else 0

    def fill_backlog(self, n: int, *, rule: str = "bench", sink: str = "hook") -> float:
        """``fill_backlog`` for either backend; PostgreSQL: after ``relay db upgrade``, the same
        rows by COPY in one transaction, then ANALYZE (as autovacuum would soon after)."""
        if self.path is not None:
            return fill_backlog(self.path, n, rule=rule, sink=sink)
        import psycopg

        self.upgrade()
        t0 = time.perf_counter()
        events, deliveries = backlog_rows(n, rule=rule, sink=sink)
        with psycopg.connect(self.url, connect_timeout=5) as conn:  # one transaction
            with conn.cursor() as cur:
                with cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
                    for row in events:
                        copy.write_row(row)
                with cur.copy(f"COPY deliveries ({DELIVERY_COLUMNS}) FROM STDIN") as copy:
                    for row in deliveries:
                        copy.write_row(row)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE events")
            conn.execute("ANALYZE deliveries")
        return time.perf_counter() - t0

    def drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self in _DATABASES:
            _DATABASES.remove(self)
            import psycopg
            from psycopg import sql

            with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=5) as conn:
                query = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                conn.execute(query.format(sql.Identifier(self.schema)))


def drop_all_databases() -> None:
    for db in list(_DATABASES):
        try:
            db.drop()
        except Exception as exc:  # best effort at exit: say what is left behind
            print(f"(could not drop schema {db.schema}: {exc})", file=sys.stderr)
            if db in _DATABASES:
                _DATABASES.remove(db)


def postgres_server(url: str) -> str:
    """``version()`` and the settings that bound commit cost, for the output."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        shown = []
        for name in ("synchronous_commit", "fsync", "commit_delay", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            shown.append(f"{name}={row[0] if row else '?'}")
    return f"PostgreSQL {version[0] if version else '?'} ({', '.join(shown)})"


def tcp_ports(pids: set[int]) -> set[int]:
    """The local TCP ports of the sockets that processes ``pids`` hold (from /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def postgres_serving(admin_url: str, clients: set[int]) -> set[int]:
    """The PostgreSQL processes working for processes ``clients``: the backends whose client
    TCP port is one of theirs, plus the server's own background processes (WAL writer,
    checkpointer, background writer, autovacuum), which every commit makes work. Backends of
    other clients (other sessions' tests) are left out: they count as other load."""
    import psycopg

    ports = tcp_ports(clients)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid, client_port, backend_type FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid()"
        ).fetchall()
    return {
        int(pid)
        for pid, port, kind in rows
        if (kind == "client backend" and port in ports) or kind != "client backend"
    }


class GroupCpuMeter:
    """CPU use of a set of processes over an interval, as a fraction of one core: ``pids()`` is
    asked at the start and at the end; a process that appeared in between counts from 0, one
    that exited counts up to the last time it was seen (at the start: nothing)."""

    def __init__(self, pids: Callable[[], set[int]]) -> None:
        self._pids = pids
        self._cpu0: dict[int, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._cpu0 = {pid: cpu for pid in self._pids() if (cpu := _cpu_or_none(pid)) is not None}
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        used = 0.0
        for pid in self._pids() | set(self._cpu0):
            cpu = _cpu_or_none(pid)
            if cpu is not None:
                used += cpu - self._cpu0.get(pid, 0.0)
        return used / wall if wall > 0 else 0.0


def _cpu_or_none(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class MachineMeter:
    """How busy all the CPUs were over an interval (every process), in cores; and, apart, the
    hypervisor's steal: time this VM's CPUs were ready to run but the host ran something else.
    Steal slows every process here without showing as any process's CPU, so a run with much of
    it is not comparable with one without."""

    _busy0: int = 0
    _steal0: int = 0
    steal: float = 0.0

    def start(self) -> None:
        self._busy0, self._steal0 = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Busy cores over the interval, steal excepted (``steal`` holds that, in cores)."""
        wall = time.perf_counter() - self._t0
        busy, steal = self._read()
        if wall <= 0:
            return 0.0
        self.steal = (steal - self._steal0) / CLK_TCK / wall
        return (busy - self._busy0) / CLK_TCK / wall

    @staticmethod
    def _read() -> tuple[int, int]:
        """(busy but not stolen, stolen) jiffies of all CPUs so far, from /proc/stat."""
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        steal = values[7] if len(values) > 7 else 0
        return sum(values) - values[3] - values[4] - steal, steal  # idle and iowait are idle


def commit_latency_ms(folder: Path, commits: int = 100) -> tuple[float, float]:
    """(median, p90) milliseconds of one small SQLite commit (WAL, synchronous=FULL) in
    ``folder``: the disk's fsync cost, which bounds any commit-per-request design."""
    path = folder / "fsync-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (x BLOB)")
        times = []
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(2048),))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.9)


def describe_relay() -> str:
    """Which relay code is measured: its folder and, if it is this checkout, commit and state."""
    import relay

    where = Path(relay.__file__).resolve().parent
    text = f"relay from {where}"
    if where.parent == REPO:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "relay"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        text += f" at {head or '?'}" + (" + uncommitted changes in relay/" if dirty else "")
    return text


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` (0..1) percentile by nearest rank of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def commit_stats(port: int) -> dict[str, float]:
    """relay's ingest group commits so far, from its /metrics: how many, their writes and
    seconds, and how many took at most 10 ms."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10).text
    names = {
        "relay_store_commit_seconds_count": "count",
        "relay_store_commit_seconds_sum": "seconds",
        "relay_store_commit_writes_sum": "writes",
    }
    stats = dict.fromkeys(["count", "seconds", "writes", "within_10ms"], 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") != "ingest":
                continue
            if sample.name in names:
                stats[names[sample.name]] += sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "0.01":
                stats["within_10ms"] += sample.value
    return stats


def commit_text(after: list[dict[str, float]], before: list[dict[str, float]]) -> str:
    """The commits between two ``commit_stats`` readings of each replica, in one line."""
    diff = {
        key: sum(a[key] - b[key] for a, b in zip(after, before, strict=True)) for key in after[0]
    }
    n = diff["count"]
    if not n:
        return "group commits: none"
    return (
        f"group commits: {n:,.0f} of {diff['writes'] / n:.1f} events on average, "
        f"{1000 * diff['seconds'] / n:.2f} ms each on average, {n - diff['within_10ms']:,.0f} "
        "over 10 ms (relay_store_commit_seconds)"
    )
