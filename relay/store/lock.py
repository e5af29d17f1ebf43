"""One SQLite file, one relay that delivers: an exclusive lock held for the life of the process.

A delivering relay (``relay serve``, ``relay worker``) drops every lease it finds when it starts,
since on SQLite they can only be its own predecessor's (``release_all_leases``). A second one on
the same file would drop the first one's live leases and send its deliveries in flight again; so
each takes ``hold(path)`` before it opens the store, and the second is refused, naming the
holder. The lock is ``flock`` on a side file (``relay.db.lock``) that says who holds it; the
kernel drops it when the process ends, however it ends. Ingest-only processes and the CLI's
commands (which read, or replay what is not in flight) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from relay.errors import StoreError

__all__ = ["StoreLock", "hold", "lock_path"]


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


@dataclass
class StoreLock:
    """A held lock; ``release()`` (or the process ending) gives it up."""

    path: Path
    fd: int | None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops the flock


def hold(db: Path) -> StoreLock:
    """Take the exclusive lock of the SQLite file ``db``, or a StoreError naming its holder."""
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise StoreError(
            f"{db} is in use by another relay ({holder}): one SQLite file takes one relay that"
            " delivers; stop that one first (several replicas need PostgreSQL)"
        ) from None
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
    with contextlib.suppress(OSError):  # who holds it is for the message only
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
    return StoreLock(path, fd)


def _holder(fd: int) -> str:
    """``pid 123 on host h, since 2026-...Z`` from the lock file, as far as it says."""
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        return f"pid {record['pid']} on host {record['host']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded"
