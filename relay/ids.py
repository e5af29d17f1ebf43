"""Identifiers: time-ordered relay ids and stable idempotency keys."""

from __future__ import annotations

import hashlib
import random
import time


def new_id(prefix: str) -> str:
    """``prefix_`` + 12 hex digits of milliseconds + 10 random hex digits: sortable by time.

    The random part only has to make ids unique, not unguessable: it comes from ``random``
    (seeded from the OS at start-up and again in a forked child), which costs a fraction of a
    system call per id; ingest makes one id per event and per delivery."""
    return f"{prefix}_{int(time.time() * 1000):012x}{random.getrandbits(40):010x}"


def idempotency_key(source: str, message_id: str, rule: str, send_index: int) -> str:
    """The same key for the same (message, rule, send) however often it is received or replayed.

    Resend and HTTP receivers use it to drop duplicates, so a retry never sends twice.
    """
    digest = hashlib.sha256(f"{source}\x00{message_id}\x00{rule}\x00{send_index}".encode())
    return f"relay-{digest.hexdigest()[:40]}"
