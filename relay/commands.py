"""Server-side commands (serve, worker, send-test, ...): registered on the ``relay`` parser."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the server-side subcommands to ``sub`` (an argparse subparsers action)."""
    del sub


__all__ = ["argparse", "register"]
