"""`relay serve` refusing to start: in JSON mode its reasons are log lines, a level each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import TEST_ENV, Project


def test_json_mode_logs_each_config_diagnostic_at_its_severity(project: Project) -> None:
    """A rules file with a warning and an error: serve exits 1, and every stderr line is a JSON
    log line: the warning at warning, the error and why it is not starting at error."""
    project.edit_rules("events: user.created", "events: user.creatd")
    project.edit_rules("sink: slack-signups", "sink: slack-signup")
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--rules", str(project.rules),
         "--templates", str(project.templates), "--port", "9"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **TEST_ENV, "RELAY_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    said = [(line["level"], line["msg"].replace(f"{project.root}/", "")) for line in lines]
    assert said == [
        ("warning", "rules.yaml:38:13: warning: event pattern 'user.creatd' matches no known"
                    " Clerk event type (did you mean 'user.created'?)"),
        ("error", "rules.yaml:48:15: unknown sink 'slack-signup' (did you mean 'slack-signups'?)"),
        ("error", "relay: not starting: fix the errors above (`relay check` shows them too)"),
    ]  # fmt: skip
