"""The SQL sink: one parameterised statement per send, on SQLite or PostgreSQL (database sync).

``sql`` is used as written; its ``:name`` placeholders are bound to ``params``, templates rendered
per event (a lone ``{{ expr }}`` keeps its type: None is NULL; a list or mapping is bound as JSON).
Each send is one transaction, so an upsert makes a retry harmless. Lost connections, locks, I/O
and timeouts are retryable; constraints, syntax, missing tables and bad data are permanent. Error
texts show ``PostgreSQL host:port/db`` or ``SQLite path``, no password, no parameter value."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.errors import DeliveryError, PermanentError, RetryableError, did_you_mean
from relay.secret import Secret, redact
from relay.sinks.base import (
    MESSAGE_ERRORS,
    Message,
    SecretStr,
    SendFields,
    SinkContext,
    SinkSettings,
    SinkType,
    message_error,
)

__all__ = ["SINK", "SqlSendFields", "SqlSettings", "SqlSink", "parse_statement"]

_URL = re.compile(r"sqlite:///.+|postgres(?:ql)?://.*", re.DOTALL)
_TOKEN = re.compile(  # comments and blanks, a :: cast, :name, ;, quoted text, other SQL
    r"(?s)(?P<skip>--[^\n]*|/\*.*?(?:\*/|\Z)|\s+)|::|(?P<param>:[A-Za-z_][A-Za-z0-9_]*)|(?P<semi>;)"
    r"|'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|[^'\"\-/:;%\s]+|."
)
_SQLITE_RETRY = {5, 6, 7, 10, 13, 14, 15}  # BUSY LOCKED NOMEM IOERR FULL CANTOPEN PROTOCOL

if TYPE_CHECKING:  # psycopg is imported when a PostgreSQL sink is built: `relay check` needs none
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    PgPool = AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]


def parse_statement(sql: str) -> tuple[tuple[str, ...], str]:
    """The ``:name`` placeholders outside quotes and comments, and the psycopg form of ``sql``
    (``%(name)s``, ``%%``); ValueError unless it is one statement without template syntax."""
    names: dict[str, None] = {}
    out, code, ended = [], "", False
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if ended and kind not in ("skip", "semi"):
            raise ValueError("must be a single statement (more SQL follows a ';')")
        ended, code = ended or kind == "semi", code if kind == "skip" else code + text
        if kind == "param":
            names[text[1:]] = None
        out.append(f"%({text[1:]})s" if kind == "param" else text.replace("%", "%%"))
    if not code.strip(" ;"):
        raise ValueError("the statement is empty")
    if "{{" in code or "{%" in code:
        raise ValueError("is never a template: write :name in sql and the template in params")
    return tuple(names), "".join(out)


class SqlSettings(SinkSettings):
    """``type: sql``: ``url`` (``sqlite:///path``, ``postgresql://...``) and ``pool_size`` (PG)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # the input may hold a password
    url: SecretStr
    pool_size: int | None = Field(default=None, ge=1, le=100)  # default: the sink's concurrency

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: Secret) -> Secret:
        if not _URL.fullmatch(url.reveal()):  # never quote the value: it may hold a password
            raise ValueError("must be sqlite:///path/to/file.db or postgresql://user@host/dbname")
        return url


class SqlSendFields(SendFields):
    """``params``: name → value template; ``sql``: one statement with ``:name`` placeholders."""

    literal_fields: ClassVar[frozenset[str]] = frozenset({"sql"})
    params: dict[str, Any] = Field(default_factory=dict)  # validated first: sql's check uses it
    sql: str

    @field_validator("sql")
    @classmethod
    def _check_sql(cls, sql: str, info: ValidationInfo) -> str:
        used, _ = parse_statement(sql)
        params = info.data.get("params", {})  # absent when invalid (and already reported)
        for name in (n for n in used if n not in params):
            hint = did_you_mean(f":{name}", [f":{p}" for p in params])
            listed = ", ".join(params) or "no entries"
            raise ValueError(f"unknown parameter ':{name}'{hint}; params has {listed}")
        for name in (n for n in params if n not in used):
            raise ValueError(f"parameter '{name}' is not used (write :{name} or remove it)")
        return sql


class SqlSink:
    """Runs each message's statement in its own transaction on the configured database."""

    def __init__(self, settings: SqlSettings, context: SinkContext) -> None:
        self._settings, url = settings, settings.url.reveal()
        parts = urlsplit(url)
        self._path = url.removeprefix("sqlite:///") if parts.scheme == "sqlite" else None
        host = parts.netloc.rpartition("@")[2] + parts.path  # not the URL: that is redacted
        self._where = f"PostgreSQL {host}" if self._path is None else f"SQLite {self._path}"
        hidden = [v for k, v in parse_qsl(parts.query) if "password" in k.lower()]
        self._secrets = [url, parts.password or "", unquote(parts.password or ""), *hidden]
        self._lock, self._thread_lock = asyncio.Lock(), threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pool: PgPool | None = None
        self._errors: tuple[type[Exception], ...] = (sqlite3.Error,)  # the drivers' errors
        self._retryable: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
        self._pool_timeout: type[Exception] | None = None
        if self._path is None:  # opened on the first send; min_size 0: idle connections close
            import psycopg
            from psycopg.errors import ReadOnlySqlTransaction
            from psycopg_pool import AsyncConnectionPool, PoolTimeout

            self._errors = (sqlite3.Error, psycopg.Error)
            # cannot connect, connection lost, pool timeout, deadlock, serialisation, shutdown,
            # failover
            self._retryable = (psycopg.OperationalError, psycopg.InterfaceError,
                               ReadOnlySqlTransaction)  # fmt: skip
            self._pool_timeout = PoolTimeout
            kwargs = {"autocommit": True, "connect_timeout": max(2, round(settings.timeout_s))}
            self._pool = AsyncConnectionPool(
                url, kwargs=kwargs, min_size=0, max_idle=300.0, open=False, name="relay-sql",
                max_size=settings.pool_size or settings.concurrency, timeout=settings.timeout_s,
                configure=self._configure, check=AsyncConnectionPool.check_connection,
            )  # fmt: skip

    async def send(self, message: Message) -> None:
        what = f"run sql for rule '{message.rule}' on {self._where}"
        sql, params = str(message.payload.get("sql", "")), message.payload.get("params") or {}
        try:  # checked at load; the drivers reject a missing parameter
            _, pyformat = parse_statement(sql)
        except ValueError as exc:
            raise PermanentError(f"{what}: sql {exc}") from exc
        try:  # a value nested too deep for JSON, or text that is not valid Unicode
            values = {k: _bound(v) for k, v in params.items()}
        except MESSAGE_ERRORS as exc:
            raise message_error(what, exc) from exc
        try:
            if self._pool is not None:
                await self._pool.open()  # a no-op once open
                async with self._pool.connection() as conn, conn.transaction():
                    await conn.execute(pyformat, values)  # ops wrote it; event data is bound
            else:
                async with self._lock:  # one statement at a time on the one connection
                    await self._sqlite(sql, values)
        except self._errors as exc:
            raise self._translate(exc, what, values) from exc
        except MESSAGE_ERRORS as exc:  # a driver encoding a parameter's text
            raise message_error(what, exc) from exc

    async def _sqlite(self, sql: str, values: Mapping[str, Any]) -> None:
        """The statement on the sink's thread. If the send is cancelled (the worker's deadline
        for the attempt, or shutdown), the statement is stopped too, or never started: it
        must not commit after the attempt has been recorded as failed."""
        cancelled = threading.Event()
        try:
            await asyncio.to_thread(self._run_sqlite, sql, values, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            conn = self._conn
            if conn is not None:
                conn.interrupt()  # safe from any thread; the statement fails and rolls back
            raise

    def _run_sqlite(self, sql: str, values: Mapping[str, Any], cancelled: threading.Event) -> None:
        with self._thread_lock:
            conn = self._conn or sqlite3.connect(
                self._path or "",
                timeout=self._settings.timeout_s,  # the busy timeout
                isolation_level=None,  # autocommit: SQLite commits each statement
                check_same_thread=False,  # worker threads take turns under the lock
            )
            try:
                if self._conn is None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    self._conn = conn
                if cancelled.is_set():  # while it waited for the lock or connected
                    return
                conn.execute(sql, values).close()  # autocommit: one statement, one transaction
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) or self._conn is None:
                    conn.close()  # connect afresh next time (after a lock or an I/O error)
                    self._conn = None
                raise

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        timeout_ms = str(round(self._settings.timeout_s * 1000))
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", [timeout_ms])

    async def aclose(self) -> None:
        """Close the PostgreSQL pool or the SQLite connection (once no send is running)."""
        if self._pool is not None:
            await self._pool.close()
        if self._conn is not None:
            self._conn.close()

    def _translate(self, exc: Exception, what: str, values: Mapping[str, Any]) -> DeliveryError:
        """Classify a driver error; its text keeps one line, without secrets or parameter values."""
        detail = str(exc).strip().split("\n")[0]
        sqlite_code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        retry = isinstance(exc, self._retryable) and (
            not isinstance(exc, sqlite3.Error) or sqlite_code in _SQLITE_RETRY
        )
        if sqlstate := getattr(exc, "sqlstate", None):
            detail += f" (SQLSTATE {sqlstate})"
        if self._pool_timeout is not None and isinstance(exc, self._pool_timeout):
            detail = f"no connection within {self._settings.timeout_s:g} s (is it reachable?)"
        detail = redact(detail, self._secrets)
        for value in values.values():
            if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
                text = str(value)
                for quoted in (f'"{text}"', f"'{text}'", f"({text})"):
                    detail = detail.replace(quoted, f"{quoted[0]}[value]{quoted[-1]}")
                detail = detail.replace(text, "[value]") if len(text) >= 6 else detail
        return (RetryableError if retry else PermanentError)(f"{what}: {detail}")


def _bound(value: Any) -> Any:
    """A parameter as bound: a list or mapping as JSON text, anything else as it is."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def describe(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The statement and its rendered parameters, for ``relay preview``."""
    params = json.dumps(payload.get("params", {}), indent=2, ensure_ascii=False, default=str)
    return [("sql", str(payload.get("sql", "")).strip()), ("params", params)]


SINK = SinkType(
    name="sql", settings=SqlSettings, send_fields=SqlSendFields, build=SqlSink,
    template_required=False, describe=describe,
)  # fmt: skip
