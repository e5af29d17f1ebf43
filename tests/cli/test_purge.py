"""`relay purge --older-than`: delivered and dead history goes, pending work stays; it asks
first, takes --yes and --json, and refuses a duration shorter than Svix's retry window."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from tests.cli.helpers import Terminal, at_store, deliveries, run


def event_ids(db: Path) -> list[str]:
    return sorted(e.id for e in at_store(db, lambda s: s.list_events(limit=100)))


def test_purge_deletes_final_history_and_keeps_pending_work(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dead welcome email and its delivered alert (and their 4 attempts) go with their
    event, as does the event that matched no rule; the membership sync waiting for its retry
    stays, with its event and attempt."""
    assert run(db, "purge", "--older-than", "30d", "--yes") == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"purged 2 events, 2 deliveries and 4 attempts received before \S+ "
        r"\(pending work is kept\)\n",
        out,
    )
    assert event_ids(db) == ["evt_3"]
    assert list(deliveries(db)) == ["dlv_3a"]
    assert len(at_store(db, lambda s: s.list_attempts("dlv_3a"))) == 1


def test_purge_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json: what was purged, as one object."""
    assert run(db, "purge", "--older-than", "8w", "--yes", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert {k: answer[k] for k in ("events", "deliveries", "attempts")} == {
        "events": 2, "deliveries": 2, "attempts": 4}  # fmt: skip
    assert answer["older_than"].endswith("Z")


def test_purge_of_history_younger_than_the_duration_is_nothing(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing received before the cut: nothing goes (the data is from May 2024)."""
    assert run(db, "purge", "--older-than", "100000d", "--yes", "--json") == 0
    assert json.loads(capsys.readouterr().out)["events"] == 0
    assert event_ids(db) == ["evt_1", "evt_2", "evt_3"]


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 1), ("n\n", 1, 3)])
def test_purge_asks_on_a_terminal(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    left: int,
) -> None:
    """Without --yes it asks on a terminal; only a yes purges."""
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    assert run(db, "purge", "--older-than", "30d") == code
    assert "Purge finished history received before " in capsys.readouterr().out
    assert len(event_ids(db)) == left


def test_purge_without_yes_and_no_tty_refuses(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --yes and no terminal to ask on: nothing is purged, and it says why."""
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run(db, "purge", "--older-than", "30d") == 1
    assert capsys.readouterr().err.endswith("stdin is not a terminal (pass --yes)\n")
    assert len(event_ids(db)) == 3


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("1d", "1d is shorter than 28h: Svix retries a message for up to ~28 h, and a purged"
               " event's retry would be accepted as new"),
        ("27h", "27h is shorter than 28h"),
        ("soon", "'soon' is not a duration"),
    ],
)  # fmt: skip
def test_purge_refuses_less_than_the_dedup_window(
    db: Path, capsys: pytest.CaptureFixture[str], duration: str, message: str
) -> None:
    """A duration under 28 h (or not a duration) is a usage error (exit 2); nothing goes."""
    with pytest.raises(SystemExit) as exit_:
        run(db, "purge", "--older-than", duration, "--yes")
    assert exit_.value.code == 2
    assert f"relay purge: error: argument --older-than: {message}" in capsys.readouterr().err
    assert len(event_ids(db)) == 3
