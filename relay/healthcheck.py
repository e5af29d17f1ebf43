"""The container's HEALTHCHECK: is the relay of this container answering ``/healthz``?

``python -m relay.healthcheck [PID]`` reads the command line of the relay process (PID 1 in a
container, the entrypoint) to find where ``/healthz`` answers: on the ops port when one is set
(``--ops-port`` or ``$RELAY_OPS_PORT``: the public port then carries only the webhooks), else
``relay serve`` on ``--port`` or ``$RELAY_PORT`` (8000), ``relay worker`` on ``--port`` (8001); then
asks
``http://127.0.0.1:PORT/healthz`` and exits 0 on a 200, 1 otherwise. It imports nothing of
relay's beyond this file and the standard library: it runs every 30 s.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["main", "port_of"]

DEFAULT_PORTS = {"serve": 8000, "worker": 8001}


def port_of(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """The port where a ``relay serve`` or ``relay worker`` command line answers ``/healthz``,
    or None when the command is neither."""
    command = next((arg for arg in argv if arg in DEFAULT_PORTS), None)
    if command is None:
        return None
    ops = _option(argv, "--ops-port") or env.get("RELAY_OPS_PORT", "").strip()
    if ops:
        return int(ops)
    port = _option(argv, "--port")
    if port:
        return int(port)
    if command == "serve" and env.get("RELAY_PORT", "").strip():
        return int(env["RELAY_PORT"])
    return DEFAULT_PORTS[command]


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``name VALUE`` or ``name=VALUE`` on the command line."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pid = args[0] if args else "1"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        port = port_of(raw.decode().split("\0"), os.environ)
    except (OSError, ValueError) as exc:
        print(f"relay healthcheck: cannot read process {pid}: {exc}", file=sys.stderr)
        return 1
    if port is None:
        print(f"relay healthcheck: process {pid} is not relay serve or worker", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"relay healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
