"""The sql sink's statements and their checks at load: placeholders, located config errors,
`relay check` and `relay preview` on the shipped example."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import load_config
from relay.errors import ConfigError
from relay.sinks.sql import describe, parse_statement
from tests.conftest import ROOT, TEST_SECRET
from tests.sinks.sql_example import ADA, EXAMPLE, SAMPLES, example_config, sample


@pytest.mark.parametrize(
    ("sql", "names", "pyformat"),
    [
        ("SELECT :a, :b, :a", ("a", "b"), "SELECT %(a)s, %(b)s, %(a)s"),
        ("SELECT :a::text", ("a",), "SELECT %(a)s::text"),
        ("SELECT x::int FROM t", (), "SELECT x::int FROM t"),
        ("SELECT ':no', 'it''s :no', \":no\"", (), "SELECT ':no', 'it''s :no', \":no\""),
        ("SELECT 1 -- :no\n/* :no; */ + :yes", ("yes",), "SELECT 1 -- :no\n/* :no; */ + %(yes)s"),
        ("SELECT '50%' || :p", ("p",), "SELECT '50%%' || %(p)s"),
        ("DELETE FROM t WHERE id = :id;", ("id",), "DELETE FROM t WHERE id = %(id)s;"),
        ("DELETE FROM t WHERE a = :a; -- end\n", ("a",), "DELETE FROM t WHERE a = %(a)s; -- end\n"),
        ("SELECT ';' || :a", ("a",), "SELECT ';' || %(a)s"),
    ],
)  # fmt: skip
def test_statement_placeholders(sql: str, names: tuple[str, ...], pyformat: str) -> None:
    """:name placeholders outside quotes and comments; '::' is a cast; psycopg form escapes %."""
    assert parse_statement(sql) == (names, pyformat)


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("DELETE FROM t; DROP TABLE t", "must be a single statement (more SQL follows a ';')"),
        ("SELECT 1;\nSELECT 2;", "must be a single statement (more SQL follows a ';')"),
        ("  -- nothing\n", "the statement is empty"),
        (";", "the statement is empty"),
        (
            "DELETE FROM t WHERE id = '{{ data.id }}'",
            "is never a template: write :name in sql and the template in params",
        ),
    ],
)
def test_statement_errors(sql: str, error: str) -> None:
    """More than one statement, none, or template syntax in sql are errors."""
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        parse_statement(sql)


def _key_at(path: Path, anchor: str, key: str) -> str:
    """``FILE:LINE:COL`` of the value of the nearest ``key:`` at or above the line with
    ``anchor``: where a config error about that key points."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = next(i for i, line in enumerate(lines) if anchor in line)
    at = next(i for i in range(found, -1, -1) if lines[i].lstrip().startswith(f"{key}:"))
    return f"{path}:{at + 1}:{lines[at].index(f'{key}:') + len(key) + 3}"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A writable copy of the example rules.yaml."""
    path = tmp_path / "rules.yaml"
    shutil.copy(EXAMPLE / "rules.yaml", path)
    return path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _errors(path: Path) -> list[str]:
    env = {"APP_DATABASE_URL": "sqlite:///app.db", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
    with pytest.raises(ConfigError) as caught:
        load_config(path, ROOT / "templates", env=env)
    return [str(d) for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    ("old", "new", "anchor", "key", "error"),
    [
        (":first_name, :last_name", ":frist_name, :last_name", ":frist_name", "sql",
         "sql: unknown parameter ':frist_name' (did you mean ':first_name'?); "
         "params has clerk_id, email, first_name, last_name, updated_at"),
        ("WHERE clerk_id = :clerk_id", "WHERE clerk_id = :id", "clerk_id = :id", "sql",
         "sql: unknown parameter ':id'; params has clerk_id"),
        ('          role: "{{ data.role }}"',
         '          role: "{{ data.role }}"\n          extra: "{{ data.id }}"',
         "INSERT INTO memberships", "sql",
         "sql: parameter 'extra' is not used (write :extra or remove it)"),
        ("WHERE user_id = :user_id", "WHERE user_id = :user_id; DROP TABLE users",
         "DROP TABLE", "sql", "sql: must be a single statement (more SQL follows a ';')"),
        ("WHERE clerk_id = :clerk_id", "WHERE clerk_id = '{{ data.id }}'", "{{ data.id }}'", "sql",
         "sql: is never a template: write :name in sql and the template in params"),
        ("url: ${APP_DATABASE_URL}", "url: mysql://root:hunter2@db/app", "mysql://", "url",
         "url: must be sqlite:///path/to/file.db or postgresql://user@host/dbname"),
    ],
)  # fmt: skip
def test_config_errors_are_located(
    broken: Path, old: str, new: str, anchor: str, key: str, error: str
) -> None:
    """A broken sql send (or url) is a located config error with an exact, readable message,
    and the URL is never quoted."""
    _edit(broken, old, new)
    errors = _errors(broken)
    assert f"{_key_at(broken, anchor, key)}: {error}" in errors
    assert not any("hunter2" in e for e in errors)


def test_relay_check_reports_sql_errors_and_unset_variables(
    broken: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay check` on a broken copy: the unknown parameter with its line (exit 1), and the
    unset ${APP_DATABASE_URL} as a located warning (check needs no secrets)."""
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    _edit(broken, ":first_name, :last_name", ":frist_name, :last_name")
    code = main(
        ["check", "--rules", str(broken), "--templates", str(ROOT / "templates"),
         "--samples", str(SAMPLES)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert (
        f"{_key_at(broken, ':frist_name', 'sql')}: sql: unknown parameter ':frist_name' "
        "(did you mean ':first_name'?); params has clerk_id, email, first_name, last_name, "
        "updated_at"
    ) in err
    assert (
        f"{_key_at(broken, '${APP_DATABASE_URL}', 'url')}: "
        "warning: environment variable APP_DATABASE_URL is not set"
    ) in err
    assert err.endswith("relay check: invalid configuration\n")


@pytest.mark.parametrize("samples", [SAMPLES, ROOT / "samples"], ids=["example", "shipped"])
def test_the_example_passes_relay_check(
    samples: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped example passes check, against its own samples and the project's."""
    monkeypatch.setenv("APP_DATABASE_URL", "sqlite:///app.db")
    monkeypatch.setenv("CLERK_WEBHOOK_SIGNING_SECRET", TEST_SECRET)
    code = main(
        ["check", "--rules", str(EXAMPLE / "rules.yaml"), "--templates", str(ROOT / "templates"),
         "--samples", str(samples)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("relay check: OK (4 rules, 5 sends, 1 sinks, ")
    if samples == SAMPLES:
        assert err == ""  # every rule rendered against a sample


def test_preview_shows_the_statement_and_its_parameters() -> None:
    """describe() gives the statement and the rendered parameters (None as null)."""
    config = example_config("sqlite:///app.db")
    send = next(r for r in config.rules if r.name == "sync-user").sends[0]
    lines = dict(describe(send.render(sample("user.created"))))
    assert lines["sql"].startswith("INSERT INTO users (clerk_id, email, first_name, last_name")
    assert json.loads(lines["params"]) == {
        "clerk_id": ADA,
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": None,
        "updated_at": 1716883200000,
    }
