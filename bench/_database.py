"""Where one relay run keeps its data: a SQLite file or a fresh PostgreSQL schema of its own.

Also what the output says about PostgreSQL: its version and commit settings, and which of its
processes work for the bench's servers (for their CPU). A schema made here is dropped when the
run is done, at the latest at exit (Ctrl-C and SIGTERM included), unless it is kept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _backlog import DELIVERY_COLUMNS, EVENT_COLUMNS, backlog_rows, count_rows, fill_backlog
from _procs import RELAY_BIN, on_cleanup

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


def _drop_all(keep: bool) -> None:
    """Drop every schema still here (at exit, or when the work dir goes); ``keep``: print
    their URLs and forget them instead."""
    if keep:
        for db in _DATABASES:
            print(f"(kept schema {db.schema}: {db.url})")
        _DATABASES.clear()
    for db in list(_DATABASES):
        try:
            db.drop()
        except Exception as exc:  # best effort at exit: say what is left behind
            print(f"(could not drop schema {db.schema}: {exc})", file=sys.stderr)
            if db in _DATABASES:
                _DATABASES.remove(db)


on_cleanup(_drop_all)


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
