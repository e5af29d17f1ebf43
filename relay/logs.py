"""Structured logs: one line per event and per attempt; JSON when not on a terminal.

Callers pass fields as ``extra={"fields": {...}}``. No secret or message body is ever logged:
callers log ids, names, outcomes and redacted error texts only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import IO, Any


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._encode = json.JSONEncoder(default=str).encode  # built once, not per line
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # a busy relay logs many lines per second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._encode(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (
            f"  {extra}" if extra else ""
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class TurnBufferedHandler(logging.Handler):
    """Writes to ``stream`` like ``logging.StreamHandler``, but on an event loop's thread the
    lines of one loop turn go out together, in one write, at the end of that turn (a busy relay
    logs a line per event; one write per line would cost a system call each). Lines logged
    where no loop runs (start-up, the store's thread) are written at once."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) > 1:
            return  # a write is already due
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop on this thread
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()
        except Exception:  # as StreamHandler: a broken stderr must not break the relay
            self.handleError(logging.makeLogRecord({"msg": "cannot write log lines"}))
        finally:
            self.release()


def level(name: str) -> int:
    """The logging level of a ``RELAY_LOG_LEVEL`` name (debug, info, warning, error)."""
    return int(logging.getLevelName(name.upper()))


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Send relay's logs to stderr, as JSON unless stderr is a terminal (or fmt says)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = TurnBufferedHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if use_json else TextFormatter())
    root = logging.getLogger("relay")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Every formatter here writes only the time, level, logger, message and fields: skip what a
    # log record would otherwise look up on each call (the logging HOWTO, "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no findCaller stack walk: file and line are never written
