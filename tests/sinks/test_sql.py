"""The sql sink, on a real SQLite file and on the local PostgreSQL server, driven by the shipped
example (examples/sql-sync): rules.yaml loaded by ``load_config``, each send rendered against
Clerk-shaped events, the messages sent by the sink built the way ``relay serve`` builds it.

This is the sql sink's conformance harness. The HTTP one (relay/sinks/testing.py: 2xx, 4xx,
429, 5xx through respx) does not apply to a sink that speaks SQL; its ideas do, and are here:
a delivery does exactly what it should, a retry after a failure delivers, each failure is
classified (constraint, syntax, missing table → permanent; locked, unreachable, cannot open →
retryable), and no secret (the URL's password) or parameter value (emails) is in any error text.

PostgreSQL tests use RELAY_TEST_POSTGRES_URL (default: the local server's ``test`` database), each
in a fresh schema of its own, dropped after. Without a reachable server they skip, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from relay.errors import DeliveryError, PermanentError, RetryableError
from relay.secret import redact
from tests.sinks.sql_example import (
    ADA,
    EMAIL,
    JANE,
    MEMBERS,
    ORG,
    PASSWORD,
    USERS,
    Database,
    assert_clean,
    deliver,
    example,
    example_config,
    message,
    open_sink,
    postgres_database,
    sample,
    settings_for,
    sqlite_database,
)


@pytest.mark.anyio
async def test_user_created_inserts_the_primary_email(db: Database) -> None:
    """user.created inserts one row with the PRIMARY email (not the first listed) and NULL for a
    null last name."""
    async with example(db) as (config, sink):
        assert await deliver(config, sink, sample("user.created")) == 1
    assert db.query(USERS) == [(ADA, "ada@example.com", "Ada", None, 1716883200000)]


@pytest.mark.anyio
async def test_user_updated_updates_the_row(db: Database) -> None:
    """user.updated overwrites email, names and updated_at of the existing row."""
    async with example(db) as (config, sink):
        await deliver(config, sink, sample("user.created"))
        await deliver(config, sink, sample("user.updated"))
    assert db.query(USERS) == [(ADA, "ada.lovelace@example.com", "Ada", "Lovelace", 1732700600000)]


@pytest.mark.anyio
async def test_a_retried_delivery_leaves_exactly_one_row(db: Database) -> None:
    """The same message sent twice (a retry after a lost acknowledgement) leaves one row."""
    async with example(db) as (config, sink):
        event = sample("user.created")
        await deliver(config, sink, event)
        await deliver(config, sink, event)
        await deliver(config, sink, sample("organizationMembership.created"))
        await deliver(config, sink, sample("organizationMembership.created"))
    assert db.query("SELECT count(*) FROM users") == [(1,)]
    assert db.query("SELECT count(*) FROM memberships") == [(1,)]


@pytest.mark.anyio
async def test_an_older_event_never_overwrites_a_newer_row(db: Database) -> None:
    """Out of order (updated before created), the row keeps the newer event's data."""
    async with example(db) as (config, sink):
        await deliver(config, sink, sample("user.updated"))
        await deliver(config, sink, sample("user.created"))
    assert db.query("SELECT email, last_name FROM users") == [
        ("ada.lovelace@example.com", "Lovelace")
    ]


@pytest.mark.anyio
async def test_a_user_without_email_gets_null(db: Database) -> None:
    """A phone-only user (no primary email id) is stored with email NULL."""
    event = sample("user.created", primary_email_address_id=None, email_addresses=[])
    async with example(db) as (config, sink):
        await deliver(config, sink, event)
    assert db.query("SELECT email FROM users") == [(None,)]


@pytest.mark.anyio
async def test_user_deleted_removes_the_row_and_memberships(db: Database) -> None:
    """user.deleted (only an id) deletes the user's row and memberships; deleting again is a
    no-op."""
    async with example(db) as (config, sink):
        await deliver(config, sink, sample("user.created"))
        await deliver(config, sink, sample("user.created", id=JANE))
        await deliver(config, sink, sample("organizationMembership.created"))
        deleted = sample("user.deleted", id=JANE)
        assert await deliver(config, sink, deleted) == 2
        assert await deliver(config, sink, deleted) == 2
    assert db.query("SELECT clerk_id FROM users") == [(ADA,)]
    assert db.query(MEMBERS) == []


@pytest.mark.anyio
async def test_membership_created_updated_deleted(db: Database) -> None:
    """Membership events insert, change the role of, and delete the (org, user) row."""
    async with example(db) as (config, sink):
        await deliver(config, sink, sample("organizationMembership.created"))
        assert db.query(MEMBERS) == [(ORG, JANE, "org:member")]
        await deliver(config, sink, sample("organizationMembership.updated"))
        assert db.query(MEMBERS) == [(ORG, JANE, "org:admin")]
        await deliver(config, sink, sample("organizationMembership.deleted"))
        assert db.query(MEMBERS) == []


@pytest.mark.anyio
async def test_concurrent_sends_all_land(db: Database) -> None:
    """Twenty sends at once (the worker's concurrency) each commit their row."""
    async with example(db) as (config, sink):
        events = [sample("user.created", id=f"user_{i:02}") for i in range(20)]
        await asyncio.gather(*(deliver(config, sink, e) for e in events))
    assert db.query("SELECT count(*) FROM users") == [(20,)]


@pytest.mark.anyio
async def test_lists_and_mappings_are_bound_as_json(db: Database) -> None:
    """A parameter whose value is a list or mapping is stored as JSON text."""
    payload = {
        "sql": "INSERT INTO users (clerk_id, first_name) VALUES (:id, :meta)",
        "params": {"id": ADA, "meta": {"plan": "pro", "seats": [1, 2]}},
    }
    async with open_sink(settings_for(db.url)) as sink:
        await sink.send(message(payload))
    (stored,) = db.query("SELECT first_name FROM users")[0]
    assert json.loads(stored) == {"plan": "pro", "seats": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Failures: classified, saying what was attempted, without secrets or values


def _where(db: Database) -> str:
    """How error texts show the database: the file, or host and database (no userinfo, no
    query); never the URL itself, which the worker would redact as a secret."""
    if db.url.startswith("sqlite:"):
        return f"SQLite {db.url.removeprefix('sqlite:///')}"
    parts = urlsplit(db.url)
    return f"PostgreSQL {parts.netloc.rpartition('@')[2]}{parts.path}"


@pytest.mark.anyio
async def test_a_constraint_violation_is_permanent(db: Database) -> None:
    """A duplicate key (a plain INSERT, not an upsert) is permanent; the text names the rule, the
    database and the constraint, and shows neither the key nor the email."""
    payload = {
        "sql": "INSERT INTO users (clerk_id, email) VALUES (:id, :email)",
        "params": {"id": ADA, "email": EMAIL},
    }
    async with open_sink(settings_for(db.url)) as sink:
        await sink.send(message(payload))
        with pytest.raises(PermanentError) as caught:
            await sink.send(message(payload))
    text = str(caught.value)
    assert text.startswith(f"run sql for rule 'sync-user' on {_where(db)}: ")
    expected = {
        "sqlite": "UNIQUE constraint failed: users.clerk_id",
        "postgresql": 'duplicate key value violates unique constraint "users_pkey"'
        " (SQLSTATE 23505)",
    }[urlsplit(db.url).scheme]
    assert text.endswith(expected)
    assert_clean(caught.value, ADA, db.secret)
    secrets = example_config(db.url).secret_values  # what the worker redacts from error texts
    assert redact(text, secrets) == text


@pytest.mark.anyio
async def test_a_not_null_violation_is_permanent(db: Database) -> None:
    """A NULL in a NOT NULL column is permanent, and the failing row's values are not shown."""
    payload = {
        "sql": "INSERT INTO memberships (org_id, user_id, role) VALUES (:org, :user, :role)",
        "params": {"org": "org_secretive", "user": EMAIL, "role": None},
    }
    async with open_sink(settings_for(db.url)) as sink:
        with pytest.raises(PermanentError) as caught:
            await sink.send(message(payload, rule="sync-membership"))
    assert "role" in str(caught.value)
    assert_clean(caught.value, "org_secretive", db.secret)


@pytest.mark.anyio
async def test_a_missing_table_is_permanent(bare_db: Database) -> None:
    """A statement on a table that does not exist is permanent and says which table."""
    async with example(bare_db) as (config, sink):
        with pytest.raises(PermanentError) as caught:
            await deliver(config, sink, sample("user.created"))
    assert str(caught.value).startswith(f"run sql for rule 'sync-user' on {_where(bare_db)}: ")
    assert str(caught.value).endswith(
        {"sqlite": "no such table: users", "postgresql": 'relation "users" does not exist'
         " (SQLSTATE 42P01)"}[urlsplit(bare_db.url).scheme]
    )  # fmt: skip
    assert_clean(caught.value, bare_db.secret)


@pytest.mark.anyio
async def test_a_syntax_error_is_permanent(db: Database) -> None:
    """A statement the database cannot parse is permanent."""
    payload = {"sql": "INSRT INTO users (clerk_id) VALUES (:id)", "params": {"id": ADA}}
    async with open_sink(settings_for(db.url)) as sink:
        with pytest.raises(PermanentError, match="syntax error") as caught:
            await sink.send(message(payload))
    assert_clean(caught.value, ADA, db.secret)


@pytest.mark.anyio
async def test_bad_data_is_permanent_without_the_value(postgres_url: str) -> None:
    """PostgreSQL rejecting a value (text for a bigint) is permanent; the value is not shown."""
    db = postgres_database(postgres_url)
    payload = {
        "sql": "INSERT INTO users (clerk_id, updated_at) VALUES (:id, :at)",
        "params": {"id": ADA, "at": EMAIL},
    }
    async with open_sink(settings_for(db.url)) as sink:
        with pytest.raises(PermanentError) as caught:
            await sink.send(message(payload))
    assert str(caught.value).endswith(
        'invalid input syntax for type bigint: "[value]" (SQLSTATE 22P02)'
    )
    assert_clean(caught.value, ADA, db.secret)


@pytest.mark.anyio
@pytest.mark.parametrize("connected", [False, True], ids=["first-send", "connected"])
async def test_a_locked_sqlite_database_is_retryable_then_delivers(
    tmp_path: Path, connected: bool
) -> None:
    """While another connection holds BEGIN EXCLUSIVE, a send waits timeout_s and is retryable
    ("database is locked"); once the lock is gone, the retry delivers exactly one row."""
    db = sqlite_database(tmp_path / "app.db")
    config = example_config(db.url)
    payload = next(r for r in config.rules if r.name == "sync-user").sends[0]
    sent = message(payload.render(sample("user.created")))
    async with open_sink(settings_for(db.url, timeout_s=0.2)) as sink:
        if connected:
            await sink.send(message(payload.render(sample("user.created", id=JANE))))
        with contextlib.closing(
            sqlite3.connect(tmp_path / "app.db", isolation_level=None)
        ) as other:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(RetryableError) as caught:
                await sink.send(sent)
            other.execute("ROLLBACK")
        await sink.send(sent)
    assert str(caught.value) == f"run sql for rule 'sync-user' on {_where(db)}: database is locked"
    ids = [row[0] for row in db.query("SELECT clerk_id FROM users")]
    assert ids.count(ADA) == 1


@pytest.mark.anyio
async def test_a_cancelled_sqlite_statement_stops_and_writes_nothing(tmp_path: Path) -> None:
    """The worker cancels a send at its attempt's deadline. A SQLite statement still running
    then is interrupted (it rolls back: nothing is written after the attempt was recorded as
    failed), and the sink's next send does not wait for it."""
    db = sqlite_database(tmp_path / "app.db", schema=False)
    endless = (  # counts to 10^8: half a minute here, unless stopped
        "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL"
        " SELECT x + 1 FROM c WHERE x < 100000000) SELECT x FROM c)"
    )
    async with open_sink(settings_for(db.url)) as sink:
        await sink.send(message({"sql": "CREATE TABLE t (n INTEGER)", "params": {}}))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await sink.send(message({"sql": endless, "params": {}}))
        async with asyncio.timeout(5):
            await sink.send(message({"sql": "INSERT INTO t VALUES (1)", "params": {}}))
    assert db.query("SELECT n FROM t") == [(1,)]


@pytest.mark.anyio
async def test_an_unopenable_sqlite_file_is_retryable(tmp_path: Path) -> None:
    """A database file that cannot be opened (its folder is missing, say) is retryable."""
    url = f"sqlite:///{tmp_path}/missing/app.db"
    async with open_sink(settings_for(url)) as sink:
        with pytest.raises(RetryableError) as caught:
            await sink.send(message({"sql": "SELECT 1", "params": {}}))
    assert (
        str(caught.value) == f"run sql for rule 'sync-user' on SQLite {tmp_path}/missing/app.db: "
        "unable to open database file"
    )


@pytest.mark.anyio
async def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///data/app.db is data/app.db in the working directory."""
    (tmp_path / "data").mkdir()
    db = sqlite_database(tmp_path / "data" / "app.db")
    monkeypatch.chdir(tmp_path)
    async with example(Database("sqlite:///data/app.db", db.query)) as (config, sink):
        await deliver(config, sink, sample("user.created"))
    assert db.query("SELECT clerk_id FROM users") == [(ADA,)]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.anyio
async def test_an_unreachable_postgres_is_retryable(tmp_path: Path) -> None:
    """No server at the URL: retryable after timeout_s, the URL shown without its password."""
    port = _closed_port()
    url = f"postgresql://relay:{PASSWORD}@127.0.0.1:{port}/app?sslmode=disable"
    async with open_sink(settings_for(url, timeout_s=0.5)) as sink:
        with pytest.raises(RetryableError) as caught:
            await sink.send(message({"sql": "SELECT :x", "params": {"x": EMAIL}}))
    assert str(caught.value) == (
        f"run sql for rule 'sync-user' on PostgreSQL 127.0.0.1:{port}/app: "
        "no connection within 0.5 s (is it reachable?)"
    )
    assert_clean(caught.value)


def test_settings_never_show_the_url() -> None:
    """Neither the settings' repr nor a validation error quotes the URL (it may hold a
    password)."""
    settings = settings_for(f"postgresql://relay:{PASSWORD}@db.internal/app")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    with pytest.raises(ValidationError) as caught:
        settings_for(f"mysql://relay:{PASSWORD}@db.internal/app")
    assert PASSWORD not in str(caught.value)
    assert "must be sqlite:///path/to/file.db or postgresql://user@host/dbname" in str(caught.value)


@pytest.mark.anyio
async def test_an_error_is_a_delivery_error_only(tmp_path: Path) -> None:
    """Driver exceptions never escape: a payload the sink cannot run is a PermanentError."""
    db = sqlite_database(tmp_path / "app.db")
    async with open_sink(settings_for(db.url)) as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.send(message({"sql": "SELECT :a", "params": {}}))
    assert isinstance(caught.value, PermanentError)
