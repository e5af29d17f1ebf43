"""A full disk under the SQLite store: delivery goes on, ingest waits for room, no restart.

In WAL mode a commit appends pages to the WAL, and a checkpoint copies them into the database
file, which grows by the pages that are new. Once the disk is full, a checkpoint that needs the
file to grow fails, the WAL cannot start over, every write fails, and delivery stops with ingest,
even though recording an attempt's result needs next to no space. So:

- **A reserve.** A serving store (``open_store``) keeps ``RESERVE_BYTES`` of disk in a side file
  (``relay.db.reserve``).
  The first write that fails for a full disk gives the reserve back, checkpoints the WAL (which
  can then complete, and the WAL is reused from its start: its pages are already on disk) and
  tries that write once more: the worker keeps claiming and recording.
- **Low on space.** From then on, until the disk has room again, the WAL is checkpointed every
  ``LOW_CHECKPOINT_PAGES`` pages (so a checkpoint never needs much room), and each batch of ingests
  first looks at the free space: under ``INGEST_MIN_FREE`` it is refused at once (503, the sender
  retries), leaving that much to delivery. As soon as more is free, ingest goes on; once there is
  room for the reserve and more (``RECOVER_MORE``), the reserve is made again and the store is
  back to normal. While low on space, ingest may use what the reserve gave back, down to its
  floor: relay stops taking events with ``INGEST_MIN_FREE`` left, not at zero.

``free()`` is ``statvfs`` of the database's folder: a system call, once per batch of ingests
while low on space, and never otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from relay.errors import StoreUnavailableError

log = logging.getLogger("relay.store")

RESERVE_BYTES = 8 * 1024 * 1024  # covers a checkpoint of a full WAL (1,000 pages) and more
INGEST_MIN_FREE = 512 * 1024  # while low on space, ingest stops here, leaving it to delivery
RECOVER_MORE = 4 * 1024 * 1024  # room for the reserve and this much more: back to normal
LOW_CHECKPOINT_PAGES = 64
NORMAL_CHECKPOINT_PAGES = 1000  # SQLite's default
_FULL = 13  # SQLITE_FULL


def is_full(exc: BaseException | None) -> bool:
    """Whether a sqlite3 error says the disk (or the database) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and ((code or 0) & 0xFF) == _FULL


class DiskSpace:
    """The reserve and the low-on-space state of one SQLite store's disk. Its methods taking a
    connection run on the store's writer thread; ``free`` and ``ingest_problem`` anywhere."""

    def __init__(self, db: Path, reserve_bytes: int = 0) -> None:
        self.db = db
        self.reserve = db.with_name(db.name + ".reserve")
        self.reserve_bytes = reserve_bytes  # 0: no reserve file
        self.low = False
        self.fills = 0  # how often the disk was found full

    def free(self) -> int:
        stats = os.statvfs(self.db.parent if str(self.db.parent) else ".")
        return stats.f_bavail * stats.f_frsize

    def start(self, conn: sqlite3.Connection) -> None:
        """At open (serving): make the reserve if there is room for it, else start low."""
        if not self.reserve_bytes:
            return
        if self.reserve.exists() and self.reserve.stat().st_size >= self.reserve_bytes:
            return
        if not self._make_reserve():
            self._go_low(conn, "no room for the reserve at start")

    def filled(self, conn: sqlite3.Connection) -> None:
        """A write failed for a full disk (the caller has rolled back): give the reserve back,
        go low on space, checkpoint. The caller may then try its write once more."""
        self.fills += 1
        with contextlib.suppress(FileNotFoundError):
            self.reserve.unlink()
        self._go_low(conn, "the disk is full")

    def ingest_problem(self, conn: sqlite3.Connection) -> StoreUnavailableError | None:
        """While low on space: None if a batch of ingests may be written now, else why not.
        When there is room again, the reserve is made and the store is back to normal."""
        if not self.low:
            return None
        free = self.free()
        if free >= self.reserve_bytes + RECOVER_MORE and self._make_reserve():
            self.low = False
            conn.execute(f"PRAGMA wal_autocheckpoint = {NORMAL_CHECKPOINT_PAGES}")
            log.warning("the disk has room again", extra={"fields": {"free_bytes": free}})
            return None
        if free >= INGEST_MIN_FREE:
            return None
        return StoreUnavailableError(f"ingest: {self.full_text(free)}")

    def probe_problem(self) -> StoreUnavailableError | None:
        """For /readyz: whether ingest would be refused for want of space now."""
        if not self.low:
            return None
        free = self.free()
        if free >= INGEST_MIN_FREE:
            return None
        return StoreUnavailableError(f"probe: {self.full_text(free)}")

    def full_text(self, free: int) -> str:
        return (
            f"the disk of {self.db} is full ({free // 1024} KiB free; ingest waits for"
            f" {INGEST_MIN_FREE // 1024} KiB, leaving the rest to delivery)"
        )

    def _go_low(self, conn: sqlite3.Connection, why: str) -> None:
        if not self.low:
            self.low = True
            fields = {"free_bytes": self.free(), "reason": why}
            log.warning("low on disk space: ingest waits for room", extra={"fields": fields})
        conn.execute(f"PRAGMA wal_autocheckpoint = {LOW_CHECKPOINT_PAGES}")
        with contextlib.suppress(sqlite3.Error):  # as far as it can go now
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _make_reserve(self) -> bool:
        """Write the reserve (real blocks, not a sparse file); False if the disk has no room."""
        size = self.reserve_bytes
        if not size:
            return True
        if self.free() < size + INGEST_MIN_FREE:
            return False
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:  # not supported here: write it out
                if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL
                    raise
                chunk = b"\0" * 65536
                for offset in range(0, size, len(chunk)):
                    os.pwrite(fd, chunk, offset)
                os.fsync(fd)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.reserve)
            return False
        finally:
            os.close(fd)
