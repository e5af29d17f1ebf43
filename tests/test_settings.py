"""Process settings from RELAY_* variables: defaults, parsing, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli import main
from relay.errors import SettingsError
from relay.settings import Settings


def test_defaults() -> None:
    """With nothing set, relay uses rules.yaml, templates/ and SQLite in ./relay.db."""
    settings = Settings.from_env({})
    assert (settings.rules_path, settings.templates_dir) == (Path("rules.yaml"), Path("templates"))
    assert settings.database_url == "sqlite:///relay.db"
    assert (settings.host, settings.port, settings.dry_run) == ("127.0.0.1", 8000, False)
    assert (settings.shutdown_grace_s, settings.lease_margin_s) == (8.0, 60.0)
    assert settings.body_timeout_s == 15.0
    assert (settings.log_format, settings.log_level) == ("auto", "info")
    assert (settings.ops_host, settings.ops_port) == ("127.0.0.1", None)
    assert (settings.max_connections, settings.max_buffered_bytes) == (None, 32 * 1024 * 1024)
    assert settings.idle_timeout_s == 5.0


def test_values_are_read() -> None:
    """Each variable sets its field; flags accept 1/true/yes/on."""
    settings = Settings.from_env(
        {
            "RELAY_PORT": "9000",
            "RELAY_DRY_RUN": "true",
            "RELAY_DB_UPGRADE": "1",
            "RELAY_LEASE_MARGIN_S": "5",
            "RELAY_SHUTDOWN_GRACE_S": "2.5",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "Warning",
            "RELAY_BODY_TIMEOUT_S": "3",
            "RELAY_OPS_HOST": "0.0.0.0",
            "RELAY_OPS_PORT": "9100",
            "RELAY_MAX_CONNECTIONS": "200",
            "RELAY_MAX_BUFFERED_BYTES": "8388608",
            "RELAY_IDLE_TIMEOUT_S": "2.5",
        }
    )
    assert (settings.port, settings.dry_run, settings.db_upgrade) == (9000, True, True)
    assert (settings.lease_margin_s, settings.shutdown_grace_s) == (5.0, 2.5)
    assert (settings.log_format, settings.log_level) == ("json", "warning")
    assert settings.body_timeout_s == 3.0
    assert (settings.ops_host, settings.ops_port, settings.max_connections) == (
        "0.0.0.0",
        9100,
        200,
    )
    assert (settings.max_buffered_bytes, settings.idle_timeout_s) == (8388608, 2.5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_PORT": "abc"}, "RELAY_PORT must be a whole number, not 'abc'"),
        ({"RELAY_PORT": "70000"}, "RELAY_PORT must be between 0 and 65535, not '70000'"),
        ({"RELAY_SHUTDOWN_GRACE_S": "-1"}, "RELAY_SHUTDOWN_GRACE_S must be between 0 and 3600"),
        ({"RELAY_LEASE_MARGIN_S": "soon"}, "RELAY_LEASE_MARGIN_S must be a number, not 'soon'"),
        ({"RELAY_BODY_TIMEOUT_S": "0"}, "RELAY_BODY_TIMEOUT_S must be between 1 and 3600, not '0'"),
        ({"RELAY_LOG_FORMAT": "xml"}, "RELAY_LOG_FORMAT must be auto, json or text, not 'xml'"),
        ({"RELAY_OPS_PORT": "0"}, "RELAY_OPS_PORT must be between 1 and 65535, not '0'"),
        ({"RELAY_MAX_CONNECTIONS": "8"}, "RELAY_MAX_CONNECTIONS must be between 16 and 100000"),
        ({"RELAY_MAX_BUFFERED_BYTES": "1k"}, "RELAY_MAX_BUFFERED_BYTES must be a whole number"),
        ({"RELAY_IDLE_TIMEOUT_S": "0"}, "RELAY_IDLE_TIMEOUT_S must be between 0.1 and 3600"),
        ({"RELAY_LOG_LEVEL": "loud"}, "RELAY_LOG_LEVEL must be debug, info, warning or error"),
        ({"RELAY_DRY_RUN": "ture"},
         "RELAY_DRY_RUN must be true or false (or 1/0, yes/no, on/off), not 'ture'"),
        ({"RELAY_DRY_RUN": "2"}, "RELAY_DRY_RUN must be true or false"),
        ({"RELAY_DB_UPGRADE": "y"}, "RELAY_DB_UPGRADE must be true or false"),
        ({"RELAY_PORT": "8_000"}, "RELAY_PORT must be a whole number, not '8_000'"),
        ({"RELAY_PORT": "8e3"}, "RELAY_PORT must be a whole number, not '8e3'"),
        ({"RELAY_SHUTDOWN_GRACE_S": "nan"}, "RELAY_SHUTDOWN_GRACE_S must be a number, not 'nan'"),
        ({"RELAY_LEASE_MARGIN_S": "inf"}, "RELAY_LEASE_MARGIN_S must be a number, not 'inf'"),
        ({"RELAY_BODY_TIMEOUT_S": "1_5"}, "RELAY_BODY_TIMEOUT_S must be a number, not '1_5'"),
    ],
)  # fmt: skip
def test_malformed_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    """A malformed variable is a SettingsError that names it and its value."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("TRUE", True), (" yes ", True), ("On", True),
     ("0", False), ("false", False), ("No", False), ("off", False), ("", False)],
)  # fmt: skip
def test_flags_take_only_true_or_false_words(raw: str, value: bool) -> None:
    """A boolean variable reads 1/true/yes/on and 0/false/no/off in any case; empty is unset."""
    assert Settings.from_env({"RELAY_DRY_RUN": raw}).dry_run is value


def test_numbers_take_decimals_and_exponents() -> None:
    """A number variable takes what a person writes: 2.5, .5, 1e2, +3."""
    env = {"RELAY_SHUTDOWN_GRACE_S": ".5", "RELAY_LEASE_MARGIN_S": "1e2", "RELAY_PORT": "+3"}
    settings = Settings.from_env(env)
    assert (settings.shutdown_grace_s, settings.lease_margin_s, settings.port) == (0.5, 100.0, 3)


def test_cli_reports_a_malformed_variable_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The relay command prints one line and exits 2 for a malformed RELAY_* variable."""
    monkeypatch.setenv("RELAY_PORT", "eighty")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "relay: RELAY_PORT must be a whole number, not 'eighty'\n"


def test_cli_refuses_to_start_on_a_misspelt_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RELAY_DRY_RUN=ture does not start relay sending for real: exit 2, naming the variable."""
    monkeypatch.setenv("RELAY_DRY_RUN", "ture")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "relay: RELAY_DRY_RUN must be true or false (or 1/0, yes/no, on/off), not 'ture'\n"
    )
