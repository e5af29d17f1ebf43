"""Each command imports only what it needs: the offline ones start fast and work without a server
stack or a database driver installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_ENV

HEAVY = ("uvicorn", "psycopg", "psycopg_pool")
PROBE = """
import json, sys
from relay.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if "." not in m)}))
"""


@pytest.mark.parametrize("command", [["check"], ["preview", "samples/user.created.json"], ["test"]])
def test_offline_commands_import_no_server_or_database_driver(command: list[str]) -> None:
    """``relay check``, ``preview`` and ``test`` run to the end, uvicorn and psycopg unimported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *command],
        cwd=ROOT,
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    assert [m for m in HEAVY if m in result["modules"]] == []
    assert "relay" in result["modules"]


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    """`relay --version` prints the version pyproject.toml gave the installed package."""
    from importlib.metadata import version

    from relay.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"relay {version('relay')}\n"
