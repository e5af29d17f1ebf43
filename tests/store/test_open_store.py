"""Database URLs: which store a URL opens, which are refused, and passwords never shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.store import SQLiteStore, open_store, redact_url
from relay.store.postgres import PostgresStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relay.db", Path("relay.db")),
        ("sqlite:///data/relay.db", Path("data/relay.db")),
        ("sqlite:////var/lib/relay/relay.db", Path("/var/lib/relay/relay.db")),
        ("/var/lib/relay/relay.db", Path("/var/lib/relay/relay.db")),
        ("relay.db", Path("relay.db")),
    ],
)
def test_open_store_parses_sqlite_urls_and_paths(url: str, path: Path) -> None:
    """open_store maps sqlite:/// URLs (relative) and sqlite://// (absolute) and bare paths."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://relay:hunter2@db/relay", "unsupported store URL scheme 'mysql'"),
        ("sqlite://host/relay.db", "a sqlite URL has no host"),
        ("sqlite:///", "needs a file path"),
        ("", "needs a file path"),
        (":memory:", "needs a file path"),
    ],
)
def test_open_store_rejects_other_urls(url: str, message: str) -> None:
    """Unknown schemes and unusable URLs are a ValueError that never echoes the URL itself."""
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://relay:hunter2@db:5432/relay", "postgresql://relay:***@db:5432/relay"),
        ("postgres://relay:p%40ss/w@db/relay", "postgres://relay:***@db/relay"),
        (
            "postgresql://relay@db/relay?password=hunter2",
            "postgresql://relay@db/relay?password=***",
        ),
        ("postgresql://db/relay?sslmode=require", "postgresql://db/relay?sslmode=require"),
        ("sqlite:///relay.db", "sqlite:///relay.db"),
        ("relay.db", "relay.db"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    """redact_url shows a password in the user part or a password= parameter as ***."""
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["postgresql://relay:hunter2@db/relay", "postgres://db/relay"])
def test_open_store_maps_postgres_urls(url: str) -> None:
    """postgresql:// and postgres:// URLs name a PostgresStore, which never shows the password."""
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "hunter2" not in repr(store)
    assert "hunter2" not in store.url


def test_sqlite_users_do_not_import_psycopg() -> None:
    """Opening a SQLite URL does not import psycopg (it is imported for PostgreSQL URLs only)."""
    code = (
        "import sys; from relay.store import open_store; open_store('sqlite:///relay.db');"
        " assert 'psycopg' not in sys.modules, 'psycopg imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
