"""The sql sink's test bench: the shipped example (examples/sql-sync) on a real SQLite file or
PostgreSQL schema, its events, and the sink built the way ``relay serve`` builds it."""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from relay.config import Config, load_config
from relay.rules import match
from relay.sinks.base import Message, SinkContext
from relay.sinks.sql import SINK, SqlSettings, SqlSink
from tests.conftest import ROOT, TEST_SECRET

EXAMPLE = ROOT / "examples" / "sql-sync"
SAMPLES = EXAMPLE / "samples"
PASSWORD = "pw-hunter2-s3cret"
EMAIL = "ada.private@example.com"

# ---------------------------------------------------------------------------------------------
# Databases


@dataclass
class Database:
    """One empty database with the example schema: the URL the sink gets and a way to look."""

    url: str
    query: Callable[[str], list[tuple[Any, ...]]]
    secret: str | None = None  # a password in ``url`` that must never show


def sqlite_database(path: Path, *, schema: bool = True) -> Database:
    def query(statement: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute(statement).fetchall()

    if schema:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.executescript((EXAMPLE / "schema.sql").read_text(encoding="utf-8"))
    return Database(f"sqlite:///{path}", query)  # an absolute path: sqlite:////tmp/...


def _with_password(url: str) -> tuple[str, str]:
    """The URL with a password (the local server trusts any), and the password to look for."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo or 'postgres'}:{PASSWORD}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), PASSWORD


def postgres_database(url: str, *, schema: bool = True) -> Database:
    def query(statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(statement.encode()).fetchall()

    if schema:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((EXAMPLE / "schema.sql").read_bytes())
    with_password, secret = _with_password(url)
    return Database(with_password, query, secret)


def sample(name: str, **data: Any) -> dict[str, Any]:
    """A shipped example event, with ``data`` fields replaced."""
    event: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    event = copy.deepcopy(event)
    event["data"].update(data)
    return event


def example_config(url: str) -> Config:
    env = {"APP_DATABASE_URL": url, "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
    return load_config(EXAMPLE / "rules.yaml", ROOT / "templates", env=env)


@contextlib.asynccontextmanager
async def open_sink(settings: SqlSettings) -> AsyncIterator[SqlSink]:
    """The sink as ``relay serve`` builds it (shared HTTP client included), closed after."""
    async with httpx.AsyncClient() as http:
        sink = SINK.build(settings, SinkContext(http=http))
        assert isinstance(sink, SqlSink)
        try:
            yield sink
        finally:
            await sink.aclose()


def message(payload: Mapping[str, Any], rule: str = "sync-user") -> Message:
    return Message(
        delivery_id="dlv_1",
        idempotency_key=f"msg_1:{rule}:0",
        event_id="msg_1",
        event_type="user.created",
        rule=rule,
        sink="app-db",
        payload=payload,
    )


async def deliver(config: Config, sink: SqlSink, event: Mapping[str, Any]) -> int:
    """Send every message the event makes (as the worker would); returns how many."""
    sent = 0
    for rule in match(config.rules, event):
        for send in rule.sends:
            await sink.send(
                Message(
                    delivery_id=f"dlv_{sent}",
                    idempotency_key=f"msg_1:{rule.name}:{send.index}",
                    event_id="msg_1",
                    event_type=str(event["type"]),
                    rule=rule.name,
                    sink=send.sink,
                    payload=send.render(event),
                    event=event,
                )
            )
            sent += 1
    return sent


@contextlib.asynccontextmanager
async def example(db: Database) -> AsyncIterator[tuple[Config, SqlSink]]:
    config = example_config(db.url)
    settings = config.sinks["app-db"].settings
    assert isinstance(settings, SqlSettings)
    async with open_sink(settings) as sink:
        yield config, sink


def settings_for(url: str, **extra: Any) -> SqlSettings:
    return SqlSettings.model_validate({"type": "sql", "url": url, **extra})


def assert_clean(error: BaseException, *secrets: str | None) -> None:
    """No secret or parameter value in the error's text or repr."""
    for text in (str(error), repr(error)):
        for secret in (PASSWORD, EMAIL, *secrets):
            if secret:
                assert secret not in text, text


USERS = "SELECT clerk_id, email, first_name, last_name, updated_at FROM users ORDER BY clerk_id"
MEMBERS = "SELECT org_id, user_id, role FROM memberships ORDER BY org_id, user_id"
ADA = "user_2pQz8cRr0Kx4Hn7VbW1sYtU3mJe"
JANE = "user_2h8op3Isl1QR7tKu5FGNfaLKEoU"
ORG = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
