"""Every command's ``--help`` is pinned: a restructure of the CLI must not change what users see.

The texts live in ``tests/cli/help/`` (one file per command, rendered 100 columns wide). After a
deliberate change to a command's arguments, regenerate them with ``RELAY_PIN_HELP=1 pytest
tests/cli/test_help.py`` and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.cli import main

HELP = Path(__file__).parent / "help"
COMMANDS = [
    (),
    ("check",),
    ("preview",),
    ("test",),
    ("studio",),
    ("serve",),
    ("worker",),
    ("send-test",),
    ("db",),
    ("db", "upgrade"),
    ("events",),
    ("event",),
    ("deliveries",),
    ("replay",),
    ("explain",),
    ("purge",),
    ("suppressions",),
    ("suppressions", "list"),
    ("suppressions", "add"),
    ("suppressions", "remove"),
]


def _name(command: tuple[str, ...]) -> str:
    return "-".join(("relay", *command)) + ".txt"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "relay")
def test_help_is_unchanged(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relay COMMAND --help`` prints the pinned text and exits 0."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    pinned = HELP / _name(command)
    if os.environ.get("RELAY_PIN_HELP") == "1":
        pinned.write_text(out, encoding="utf-8")
    assert out == pinned.read_text(encoding="utf-8")
