"""The container's HEALTHCHECK: is the relay of this container answering ``/healthz``?

``python -m relay.healthcheck [PID]`` reads the command line of the relay process (PID 1 in a
container, the entrypoint) to find where it listens: ``relay serve`` on ``--port`` or
``$RELAY_PORT`` (8000), ``relay worker`` on ``--port`` (8001); then asks
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
    """The port a ``relay serve`` or ``relay worker`` command line listens on, or None when
    the command is neither."""
    command = next((arg for arg in argv if arg in DEFAULT_PORTS), None)
    if command is None:
        return None
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    if command == "serve" and env.get("RELAY_PORT", "").strip():
        return int(env["RELAY_PORT"])
    return DEFAULT_PORTS[command]


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
