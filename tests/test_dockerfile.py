"""The container recipe: what can be checked without a Docker engine.

No Docker engine runs on the build machines, so these tests read the Dockerfile and run the
command it would run, with its environment, as the image would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, TEST_ENV

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.MULTILINE)]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def test_image_is_multi_stage_and_runs_as_non_root() -> None:
    """Two stages; the final one switches to an unprivileged user and keeps data on a volume."""
    assert len(instructions("FROM")) == 2
    assert instructions("USER") == ["relay"]
    assert instructions("VOLUME") == ['["/data"]']


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    """The dependency layer comes before COPY relay, so code changes reuse the cached layer."""
    deps = DOCKERFILE.index("pip install -r /tmp/requirements.txt")
    code = DOCKERFILE.index("COPY relay ./relay")
    assert deps < code


def test_entry_command_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """`relay serve` with the image's environment starts, and the HEALTHCHECK command passes."""
    env_line = " ".join(instructions("ENV")[-1:])
    image_env = dict(pair.split("=", 1) for pair in shlex.split(env_line))
    assert image_env["RELAY_DATABASE_URL"] == "sqlite:////data/relay.db"
    command = exec_form(instructions("ENTRYPOINT")[0]) + exec_form(instructions("CMD")[0])
    assert command == ["relay", "serve"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("rules.yaml",):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("templates", "samples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {
        **os.environ,
        **TEST_ENV,
        **image_env,
        "RELAY_HOST": "127.0.0.1",
        "RELAY_PORT": str(port),
        "RELAY_DATABASE_URL": f"sqlite:///{tmp_path}/relay.db",
    }
    relay = [sys.executable, "-m", "relay", *command[1:]]
    proc = subprocess.Popen(relay, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        health = exec_form(instructions("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
        health = [
            sys.executable if part == "python" else part.replace(":8000", f":{port}")
            for part in health
        ]
        assert subprocess.run(health, timeout=10, check=False).returncode == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn re-raises SIGTERM after a clean shutdown, so the exit status is -SIGTERM.
    assert proc.returncode in (0, -15), err.decode()
    assert b'"msg": "relay stopped"' in err
