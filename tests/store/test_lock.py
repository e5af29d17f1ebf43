"""The SQLite file's delivering-relay lock: one holder, the next refused naming it, free once
released."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from relay.errors import StoreError
from relay.store.lock import hold, lock_path


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    """While the lock is held (even by this process, through another open of the file), taking
    it again fails with the holder's pid, host and start time; once released it can be taken."""
    db = tmp_path / "relay.db"
    first = hold(db)
    with pytest.raises(StoreError) as info:
        hold(db)
    message = str(info.value)
    assert message.startswith(
        f"{db} is in use by another relay (pid {os.getpid()} on host {socket.gethostname()},"
        " since 20"
    )
    assert message.endswith(
        "): one SQLite file takes one relay that delivers; stop that one first (several"
        " replicas need PostgreSQL)"
    )
    first.release()
    hold(db).release()
    assert lock_path(db) == tmp_path / "relay.db.lock"


def test_a_lock_file_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    """No directory for the lock file: a StoreError saying so, not an OSError traceback."""
    with pytest.raises(StoreError, match=r"cannot create the lock file .*: No such file"):
        hold(tmp_path / "missing" / "relay.db")
