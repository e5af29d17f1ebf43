"""The CLI on workflows: `relay check` and `relay preview` of the onboarding example, and the
new states in `relay event`, `relay deliveries` and `relay replay` (run in-process on a real
SQLite file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relay.cli import main
from relay.store import DeliveryStatus, NewDelivery, NewEvent, SQLiteStore
from relay.store.steps import Batched, Cancel, Limited
from tests.cli.helpers import at_store, deliveries, run
from tests.conftest import ROOT, TEST_ENV

EXAMPLE = ROOT / "examples" / "onboarding"
DAY = 86400.0
NOW = time.time()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


def example(*args: str) -> list[str]:
    return [
        *args[:1],
        "--rules", str(EXAMPLE / "rules.yaml"), "--templates", str(ROOT / "templates"),
        "--samples", str(EXAMPLE / "samples"), *args[1:],
    ]  # fmt: skip


def test_check_passes_on_the_onboarding_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped onboarding example passes `relay check`: its durations, window, time
    zones and keys, and its digest rendered over the samples."""
    assert main(example("check")) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (
        "relay check: OK (2 rules, 3 sends, 2 sinks, 3 sample events, 4 of 4 tests passed)\n",
        "",
    )


def test_preview_says_when_each_send_goes_out_and_what_would_cancel_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Received on a Friday evening before the clocks go forward: the welcome goes out at once,
    the tips on Tuesday 09:00 in Berlin (07:00 UTC); a user.deleted with the same key would
    cancel them; the Slack digest is rendered over the sample sign-ups."""
    sample = str(EXAMPLE / "samples" / "user.created.json")
    assert main(example("preview", sample, "--at", "2026-03-27T16:30:00Z")) == 0
    out = capsys.readouterr().out
    assert "as if received at 2026-03-27T16:30:00Z" in out
    assert "  goes out: at once\n" in out
    assert (
        "  goes out: 2026-03-31T07:00:00Z: 3d after it is received, inside the window mon-fri"
        " 09:00-17:00 Europe/Berlin (Tue 2026-03-31 09:00 there)\n"
    ) in out
    assert (
        "  and:      cancelled if user.deleted arrives with the same key"
        " ('user_2pQz8cRr0Kx4Hn7VbW1sYtU3mJe') before a send goes out\n"
    ) in out
    assert "  and:      once per key ('ada@example.com'): suppressed if the rule already" in out
    assert "  digest:   rendered over 2 event(s)" in out
    assert "  text:     2 new sign-ups: Ada, Grace Hopper\n" in out
    assert main(example("preview", sample, "--at", "2026-03-27T16:30:00Z", "--json")) == 0
    onboarding, digest = json.loads(capsys.readouterr().out)
    assert [s["due_at"] for s in onboarding["sends"]] == [None, "2026-03-31T07:00:00.000Z"]
    assert digest["digest_of"] == 2
    assert digest["sends"][0]["due_at"] == "2026-03-27T16:40:00.000Z"


def test_preview_refuses_a_bad_at(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(example("preview", "x.json", "--at", "friday"))
    assert "'friday' is not an ISO-8601 time (2024-05-01T12:00:00Z)" in capsys.readouterr().err


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A sign-up whose tips are scheduled in 3 days, one whose tips a user.deleted cancelled,
    a welcome suppressed by once, and two sign-ups in one digest."""
    path = tmp_path / "relay.db"

    def event(n: int, type: str = "user.created") -> NewEvent:
        body = json.dumps({"type": type, "data": {"id": f"user_{n}"}}).encode()
        return NewEvent(f"evt_{n}", "clerk", f"msg_{n}", type, NOW, body)

    def delivery(name: str, rule: str, due: float = NOW, **kw: object) -> NewDelivery:
        return NewDelivery(name, rule, 0, "email", f"key-{name}", due, **kw)  # type: ignore[arg-type]

    async def seed(store: SQLiteStore) -> None:
        scheduled = dict(status=DeliveryStatus.SCHEDULED)
        await store.ingest(event(1), [delivery("dlv_1", "onboarding", NOW + 3 * DAY,
                                               cancel_key="user_1", **scheduled)])  # fmt: skip
        await store.ingest(event(2), [delivery("dlv_2", "onboarding", NOW + 3 * DAY,
                                               cancel_key="user_2", **scheduled)])  # fmt: skip
        await store.admit(event(3, "user.deleted"), [], [Cancel("onboarding", "user_2", "by 3")])
        for n in (4, 5):
            step = Limited("welcome", "ada@example.com", 1, None,
                           (delivery(f"dlv_{n}", "welcome"),), "once: already sent")  # fmt: skip
            await store.admit(event(n), [], [step])
        for n in (6, 7):
            member = delivery(f"dlv_{n}m", "digest", status=DeliveryStatus.BATCHED)
            made = delivery(f"dlv_{n}d", "digest", status=DeliveryStatus.SCHEDULED)
            entry = Batched("digest", "", 50, False, f"bat_{n}", NOW + 600, NOW,
                            (member,), (made,))  # fmt: skip
            await store.admit(event(n), [], [entry])

    at_store(path, seed)
    return path


def test_event_shows_a_scheduled_send_its_due_time_and_its_cancel_key(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(db, "event", "evt_1") == 0
    out = capsys.readouterr().out
    assert "  status:       scheduled\n" in out
    assert "  due:          " in out
    assert "(in 2d)" in out
    assert "  cancel key:   user_1\n" in out


def test_event_says_which_event_cancelled_a_send(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(db, "event", "msg_2") == 0
    out = capsys.readouterr().out
    assert "  status:       cancelled\n" in out
    assert "  reason:       by 3\n" in out


def test_event_shows_a_suppressed_send_and_its_reason(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(db, "event", "evt_5", "--json") == 0
    (d,) = json.loads(capsys.readouterr().out)["deliveries"]
    assert (d["status"], d["last_error"]) == ("suppressed", "once: already sent")


def test_event_shows_the_digest_an_event_is_in(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event in a digest says which digest delivery sends it; the event that opened it also
    shows the digest itself, with how many events it holds."""
    assert run(db, "event", "evt_6") == 0
    out = capsys.readouterr().out
    assert "  status:       batched\n  attempts:     0\n" in out
    assert "  digest:       batch bat_6, sent by dlv_6d (scheduled)\n" in out
    assert "  digest of:    batch bat_6: 2 event(s)\n" in out
    assert run(db, "event", "evt_7") == 0
    assert "  digest:       batch bat_6, sent by dlv_6d (scheduled)\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("status", "ids"),
    [
        ("scheduled", ["dlv_1", "dlv_6d"]),
        ("cancelled", ["dlv_2"]),
        ("suppressed", ["dlv_5"]),
        ("batched", ["dlv_6m", "dlv_7m"]),
    ],
)
def test_deliveries_lists_each_new_state(
    db: Path, capsys: pytest.CaptureFixture[str], status: str, ids: list[str]
) -> None:
    assert run(db, "deliveries", "--status", status, "--json") == 0
    assert sorted(d["id"] for d in json.loads(capsys.readouterr().out)) == ids


def test_deliveries_table_says_when_a_scheduled_one_is_due(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(db, "deliveries", "--status", "scheduled") == 0
    out = capsys.readouterr().out
    assert "scheduled (in 2d)" in out
    assert "scheduled (in 9m)" in out


def test_replay_sends_a_cancelled_or_suppressed_one_only_when_asked(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named without its flag, a cancelled delivery is not replayed and the error says which
    flag sends it; with the flag it is pending; a bulk --suppressed replays the suppressed."""
    assert run(db, "replay", "dlv_2") == 1
    err = capsys.readouterr().err
    assert "dlv_2 is cancelled: pass --cancelled to send it anyway" in err
    assert deliveries(db)["dlv_2"].status == "cancelled"
    assert run(db, "replay", "--cancelled", "dlv_2") == 0
    assert deliveries(db)["dlv_2"].status == "pending"
    assert run(db, "replay", "evt_5") == 0  # an event's: failed and dead ones only
    assert deliveries(db)["dlv_5"].status == "suppressed"
    assert run(db, "replay", "--suppressed", "--yes") == 0
    assert deliveries(db)["dlv_5"].status == "pending"
