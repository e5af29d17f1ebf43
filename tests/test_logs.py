"""relay's log output: JSON lines, and the handler that writes a loop turn's lines at once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from relay.logs import JSONFormatter, TurnBufferedHandler, configure, emit, level


class CountingStream(io.StringIO):
    """A stream that counts write() calls (each would be a system call on stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream]]:
    stream = CountingStream()
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("relay.test-logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_of_one_loop_turn_go_out_in_one_write_at_its_end(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged

    async def turn() -> int:
        for n in range(50):
            logger.info("event accepted", extra={"fields": {"n": n}})
        written_during_turn = stream.writes
        await asyncio.sleep(0)  # the turn ends: the handler's flush runs
        return written_during_turn

    assert asyncio.run(turn()) == 0
    assert stream.writes == 1
    assert [line["n"] for line in lines(stream)] == list(range(50))


def test_lines_outside_a_loop_are_written_at_once(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("starting", extra={"fields": {"port": 8000}})
    assert lines(stream) == [
        {"ts": lines(stream)[0]["ts"], "level": "info", "logger": "relay.test-logs",
         "msg": "starting", "port": 8000}
    ]  # fmt: skip
    logger.warning("again")
    assert stream.writes == 2


def test_lines_still_buffered_when_the_loop_stops_are_not_lost(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    """A line logged in the last turn of a loop is written by logging's own shutdown flush."""
    logger, stream = logged

    async def last_words() -> None:
        logger.info("relay stopped")

    asyncio.run(last_words())
    for handler in logger.handlers:
        handler.flush()  # what logging.shutdown() does at exit
    assert [line["msg"] for line in lines(stream)] == ["relay stopped"]


def test_json_timestamp_follows_the_record_across_seconds() -> None:
    formatter = JSONFormatter()
    stamps = []
    for created in (1_800_000_000.250, 1_800_000_000.75, 1_800_000_001.125, 1_700_000_000.5):
        record = logging.makeLogRecord({"msg": "x", "levelname": "INFO", "name": "relay"})
        record.created, record.msecs = created, (created % 1) * 1000
        stamps.append(json.loads(formatter.format(record))["ts"])
    assert stamps == [
        "2027-01-15T08:00:00.250Z",
        "2027-01-15T08:00:00.750Z",
        "2027-01-15T08:00:01.125Z",
        "2023-11-14T22:13:20.500Z",
    ]


class Where:
    def __str__(self) -> str:
        return "/x"


def test_fields_that_json_cannot_encode_are_written_as_text(
    logged: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = logged
    logger.info("odd", extra={"fields": {"path": Where()}})
    assert lines(stream)[0]["path"] == "/x"


def test_relay_log_level_warning_keeps_warnings_and_drops_the_per_event_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `relay serve` sets up for RELAY_LOG_LEVEL=warning: info lines (one per event) are
    not written, warnings and errors are."""
    with restored_loggers():
        configure("json", level("warning"))
        logging.getLogger("relay.ingest").info("event accepted", extra={"fields": {"n": 1}})
        logging.getLogger("relay.ingest").warning("slow disk", extra={"fields": {"n": 2}})
        logging.getLogger("relay.ingest").error("store cannot commit")
        written = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(line["level"], line["msg"]) for line in written] == [
            ("warning", "slow disk"),
            ("error", "store cannot commit"),
        ]


def test_level_names() -> None:
    assert [level(name) for name in ("debug", "info", "warning", "error")] == [
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
    ]


@contextlib.contextmanager
def restored_loggers() -> Iterator[None]:
    """The relay and root loggers as they were, after a test that called configure()."""
    loggers = [logging.getLogger("relay"), logging.getLogger()]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, lvl, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.level, lg.propagate = handlers, lvl, propagate


@pytest.fixture
def configured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """relay's logger and a stream for its lines, restored afterwards. Each test calls
    configure() itself, as `relay serve` does: in the test's own phase, after pytest has added
    its capture handlers (which configure() replaces)."""
    stream = io.StringIO()
    with restored_loggers():
        yield logging.getLogger("relay.ingest"), stream


def written(stream: io.StringIO) -> list[dict[str, Any]]:
    """The lines written since the last call."""
    text = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    return [json.loads(line) for line in text.splitlines()]


FIELDS = {"source": "clerk", "message_id": "msg_1", "deliveries": 2, "rules": ["a", "b"]}


def test_emit_writes_the_line_logging_would_without_building_a_log_record(
    configured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = configured
    configure("json", stream=stream)
    records = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        records.append(args)
        return factory(*args, **kwargs)

    logging.setLogRecordFactory(counting)
    try:
        emit(logger, logging.INFO, "event accepted", FIELDS)
        direct = written(stream)
        assert records == []  # the fast path: no LogRecord, no handler chain
        logger.info("event accepted", extra={"fields": FIELDS})
        through_logging = written(stream)
        assert len(records) == 1
    finally:
        logging.setLogRecordFactory(factory)
    assert {k: v for k, v in direct[0].items() if k != "ts"} == {
        k: v for k, v in through_logging[0].items() if k != "ts"
    }
    assert direct[0] == {"ts": direct[0]["ts"], "level": "info", "logger": "relay.ingest",
                         "msg": "event accepted", **FIELDS}  # fmt: skip


def test_emit_goes_through_logging_when_another_handler_or_a_filter_would_see_the_line(
    configured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = configured
    configure("json", stream=stream)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Keep()
    logger.addHandler(extra)  # its lines still propagate to relay's own handler
    try:
        emit(logger, logging.INFO, "event accepted", FIELDS)
    finally:
        logger.removeHandler(extra)
    assert [(r.getMessage(), getattr(r, "fields", None)) for r in seen] == [
        ("event accepted", FIELDS)
    ]
    assert [line["msg"] for line in written(stream)] == ["event accepted"]

    logger.addFilter(lambda record: getattr(record, "fields", {}).get("source") != "clerk")
    try:
        emit(logger, logging.INFO, "event accepted", FIELDS)
        emit(logger, logging.INFO, "event accepted", {**FIELDS, "source": "stripe"})
    finally:
        logger.filters.clear()
    assert [line["source"] for line in written(stream)] == ["stripe"]


def test_emit_keeps_the_level(configured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = configured
    configure("json", stream=stream)
    logging.getLogger("relay").setLevel(logging.WARNING)
    emit(logger, logging.INFO, "delivery delivered", FIELDS)
    emit(logger, logging.WARNING, "delivery dead", FIELDS)
    assert [(line["level"], line["msg"]) for line in written(stream)] == [
        ("warning", "delivery dead")
    ]


def test_every_logger_goes_through_the_same_pipeline(
    configured: tuple[logging.Logger, io.StringIO],
) -> None:
    """After configure(), a library's lines (uvicorn, asyncio, psycopg's pool, any other) are
    JSON lines too, from WARNING up, a traceback as the `exception` field; relay's own lines keep
    their level."""
    _, stream = configured
    configure("json", stream=stream)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("psycopg.pool").info("pool opened")  # below WARNING: not written
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved\nfuture: x")
    lines = written(stream)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("uvicorn.error", "warning"),
        ("asyncio", "error"),
    ]
    assert lines[1]["msg"] == "Task exception was never retrieved\nfuture: x"
    assert lines[1]["exception"].endswith("RuntimeError: boom")


def test_a_line_that_cannot_be_formatted_is_one_json_line_saying_so(
    configured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A library's malformed log call (its arguments do not fit its format) is reported as one
    JSON line, not logging's multi-line report on stderr."""
    _, stream = configured
    configure("json", stream=stream)
    logging.getLogger("somelib").warning("%d items", "not a number")
    [line] = written(stream)
    assert (line["logger"], line["msg"]) == ("relay.logs", "a log line could not be written")
    assert (line["from_logger"], line["line"]) == ("somelib", "%d items")
    assert line["problem"].startswith("TypeError: %d format")


def test_console_format_names_a_library_logger(
    configured: tuple[logging.Logger, io.StringIO],
) -> None:
    """For a person at a terminal: one readable line, naming the logger when it is not relay's."""
    _, stream = configured
    configure("text", stream=stream)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("relay.ingest").warning("slow disk")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING uvicorn.error: Invalid HTTP request received.")
    assert second.endswith("WARNING slow disk")


def test_capture_process_turns_warnings_and_uncaught_exceptions_into_json_lines() -> None:
    """After capture_process, a warning, an exception escaping a thread and one escaping the
    main thread each come out as one JSON log line with its traceback, nothing else."""
    script = (
        "import threading, warnings\n"
        "from relay.logs import capture_process, configure\n"
        "configure('json')\n"
        "capture_process()\n"
        "warnings.warn('old api')\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='worker-1')\n"
        "t.start(); t.join()\n"
        "raise KeyError('boom')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["level"], line["logger"]) for line in lines] == [
        ("warning", "py.warnings"),
        ("error", "relay.process"),
        ("critical", "relay.process"),
    ]
    assert "old api" in lines[0]["msg"]
    assert lines[1]["thread"] == "worker-1"
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert "KeyError: 'boom'" in lines[2]["exception"]
