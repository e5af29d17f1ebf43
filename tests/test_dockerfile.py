"""The container recipe: what can be checked without a Docker engine.

No Docker engine runs on the build machines, so these tests read the Dockerfile and run the
command it would run, with its environment, as the image would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT, TEST_ENV

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# What the lock's environment markers see in the image (python:3.11-slim, Linux x86_64).
IMAGE_PLATFORM = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


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
    assert instructions("USER") == ["10001"]  # the relay user's uid (numeric: hadolint DL3066)
    assert instructions("VOLUME") == ['["/data"]']


def test_dependencies_are_installed_from_the_lock_before_the_code_is_copied() -> None:
    """The dependency layer installs requirements.lock (hashes required, nothing resolved at
    build time) before COPY relay, so code changes reuse the cached layer; relay itself adds no
    dependency of its own."""
    deps = DOCKERFILE.index("pip install --require-hashes --no-deps -r requirements.lock")
    code = DOCKERFILE.index("COPY relay ./relay")
    assert DOCKERFILE.index("COPY requirements.lock ./") < deps < code
    assert "pip install --no-deps --no-build-isolation ." in DOCKERFILE


def locked() -> dict[str, tuple[str, list[str], bool]]:
    """requirements.lock: each package's pinned version, hashes and whether the image (Linux,
    the Dockerfile's Python) installs it, by normalised name."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str], bool]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        requirement = Requirement(spec)
        (pinned,) = requirement.specifier
        assert pinned.operator == "==", f"not pinned: {line}"
        hashes = [o.removeprefix("hash=") for o in options if o.startswith("hash=sha256:")]
        in_image = requirement.marker is None or requirement.marker.evaluate(IMAGE_PLATFORM)
        pins[canonicalize_name(requirement.name)] = (pinned.version, hashes, in_image)
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_floor() -> None:
    """Every dependency of pyproject.toml is in requirements.lock, pinned (==) with hashes, at a
    version its specifier allows, for the image's platform (not behind a Windows-only marker);
    the build backend is locked too; no test tool is."""
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for spec in [*project["project"]["dependencies"], *project["build-system"]["requires"]]:
        requirement = Requirement(spec)
        version, hashes, in_image = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), f"{spec}: locked {version}"
        assert hashes, f"{requirement.name} has no hash"
        assert in_image, f"{requirement.name} is locked only for another platform"
    assert all(hashes for _, hashes, _ in pins.values())
    for tool in ("pytest", "svix", "respx", "mypy"):
        assert tool not in pins


def test_entry_command_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """`relay serve` with the image's environment starts, and the HEALTHCHECK command passes."""
    env_line = " ".join(instructions("ENV")[-1:])
    image_env = dict(pair.split("=", 1) for pair in shlex.split(env_line))
    assert image_env["RELAY_DATABASE_URL"] == "sqlite:////data/relay.db"
    command = exec_form(instructions("ENTRYPOINT")[0]) + exec_form(instructions("CMD")[0])
    assert command == ["relay", "serve"]

    port = free_port()
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
    with running([*command[1:]], port, tmp_path, env) as proc:
        assert healthcheck(proc.pid, env) == 0
    # uvicorn re-raises SIGTERM after a clean shutdown, so the exit status is -SIGTERM.
    log = (tmp_path / "relay.log").read_text()
    assert proc.returncode in (0, -15), log
    assert '"msg": "relay stopped"' in log


@contextlib.contextmanager
def running(
    args: list[str], port: int, folder: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m relay ARGS`` in ``folder`` (its stderr in ``folder/relay.log``), ready on
    ``port``; terminated afterwards."""
    with (folder / "relay.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "relay", *args], cwd=folder, env=env,
                                stderr=log)  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthcheck(pid: int, env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command, asking about ``pid`` (PID 1 in the container)."""
    health = exec_form(instructions("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    assert health == ["python", "-m", "relay.healthcheck"]
    command = [sys.executable, *health[1:], str(pid)]
    return subprocess.run(command, env=env, timeout=10, check=False).returncode


def test_healthcheck_follows_relay_worker_to_its_port(tmp_path: Path) -> None:
    """`relay worker` (as `docker run relay worker` runs it) listens on --port (8001 by default),
    not RELAY_PORT: the HEALTHCHECK finds it there, and fails once the worker has stopped."""
    port = free_port()
    shutil.copy(ROOT / "rules.yaml", tmp_path / "rules.yaml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    env = {**os.environ, **TEST_ENV, "RELAY_PORT": "9", "RELAY_LOG_FORMAT": "json",
           "RELAY_DATABASE_URL": f"sqlite:///{tmp_path}/relay.db"}  # fmt: skip
    with running(["worker", "--port", str(port)], port, tmp_path, env) as proc:
        assert healthcheck(proc.pid, env) == 0
    assert healthcheck(proc.pid, env) == 1


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        (["/venv/bin/python", "/venv/bin/relay", "serve"], {"RELAY_PORT": "8000"}, 8000),
        (["relay", "serve"], {}, 8000),
        (["relay", "serve", "--port", "9000"], {"RELAY_PORT": "8000"}, 9000),
        (["relay", "worker"], {"RELAY_PORT": "8000"}, 8001),
        (["relay", "worker", "--port=8100"], {}, 8100),
        (["relay", "serve", "--ops-port", "9100"], {"RELAY_PORT": "8000"}, 9100),
        (["relay", "serve", "--port", "9000"], {"RELAY_OPS_PORT": "9100"}, 9100),
        (["relay", "worker", "--ops-port=9101"], {}, 9101),
        (["relay", "check"], {}, None),
    ],
)
def test_healthcheck_reads_the_port_from_the_command_line(
    argv: list[str], env: dict[str, str], port: int | None
) -> None:
    """The ops port when one is set (--ops-port, else $RELAY_OPS_PORT: /healthz is there);
    else serve: --port, else $RELAY_PORT, else 8000; worker: --port, else 8001; other commands
    serve nothing."""
    from relay.healthcheck import port_of

    assert port_of(argv, env) == port


def test_default_shutdown_grace_ends_before_dockers_kill() -> None:
    """Docker sends SIGKILL 10 s after SIGTERM unless stop_grace_period says otherwise: the
    default grace leaves the rest of the shutdown at least a second and a half."""
    from relay.settings import Settings

    assert Settings().shutdown_grace_s <= 10 - 1.5
