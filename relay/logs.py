"""Structured logs: one line per event and per attempt; JSON when not on a terminal.

Callers pass fields as ``extra={"fields": {...}}``, or call ``emit`` for the per-event and
per-attempt lines (same output, less work). No secret or message body is ever logged: callers log
ids, names, outcomes and redacted error texts only.

One pipeline for every logger: ``configure`` puts relay's handler on the root logger too, so the
lines of uvicorn, asyncio, psycopg's pool and any other library come out in the same format (in
JSON, one object per line, a traceback as its ``exception`` field), and ``capture_process``
sends what would otherwise be printed to stderr (warnings, uncaught exceptions in the main thread
or another one, unraisable exceptions) through it too. Libraries log from WARNING up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from typing import IO, Any


class FieldsFormatter(logging.Formatter):
    """A formatter of relay's lines: time, level, logger, message and fields. ``line`` makes
    the text from those parts alone, so ``emit`` can write a line without a LogRecord."""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        msg: str,
        fields: dict[str, Any],
        exception: str | None = None,
    ) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        if record.exc_text and not exception:
            exception = record.exc_text
        if record.stack_info:
            exception = (exception + "\n" if exception else "") + record.stack_info
        fields = getattr(record, "fields", {})
        if not isinstance(fields, dict):
            fields = {"fields": fields}
        return self.line(
            record.created, record.levelname, record.name, record.getMessage(), fields, exception
        )


class JSONFormatter(FieldsFormatter):
    def __init__(self) -> None:
        super().__init__()
        # Built once, not per line. Fields are flat values relay builds: no cycles to look for.
        self._encode = json.JSONEncoder(default=str, check_circular=False).encode
        self._second = -1
        self._stamp = ""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        msg: str,
        fields: dict[str, Any],
        exception: str | None = None,
    ) -> str:
        second = int(created)
        if second != self._second:  # a busy relay logs many lines per second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = int((created - second) * 1000)  # as LogRecord.msecs
        line: dict[str, Any] = {
            "ts": f"{self._stamp}.{millis:03d}Z",
            "level": levelname.lower(),
            "logger": name,
            "msg": msg,
        }
        line.update(fields)
        if exception is not None:
            line["exception"] = exception
        return self._encode(line)


class TextFormatter(FieldsFormatter):
    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        msg: str,
        fields: dict[str, Any],
        exception: str | None = None,
    ) -> str:
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(created))
        who = "" if name == "relay" or name.startswith("relay.") else f"{name}: "
        text = f"{stamp} {levelname:<7} {who}{msg}" + (f"  {extra}" if extra else "")
        if exception is not None:
            text += "\n" + exception
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
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(text)

    def add(self, text: str) -> None:
        """Queue one formatted line (the caller holds the handler's lock)."""
        self._lines.append(text + "\n")
        if len(self._lines) > 1:
            return  # a write is already due
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop on this thread
            self.flush()

    def sole_handler_of(self, logger: logging.Logger, level: int) -> bool:
        """Whether a ``level`` line of ``logger`` would reach this handler alone, through no
        filter: what ``Logger.callHandlers`` would find (the logger's level is checked apart)."""
        if logger.filters or self.filters or level < self.level:
            return False
        current: logging.Logger | None = logger
        while current is not None:
            if current.handlers:
                return current.handlers == [self] and not current.propagate
            if not current.propagate:
                return False
            current = current.parent
        return False

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

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that could not be formatted or written: one line saying so, in this
        handler's format (logging's own report is a multi-line traceback on stderr)."""
        formatter = self.formatter
        if not isinstance(formatter, FieldsFormatter):
            super().handleError(record)
            return
        kind, exc, _ = sys.exc_info()
        problem = f"{kind.__name__}: {exc}" if kind is not None else "unknown"
        try:
            text = formatter.line(
                time.time(),
                "ERROR",
                "relay.logs",
                "a log line could not be written",
                {"from_logger": record.name, "line": str(record.msg)[:200], "problem": problem},
            )
            self.stream.write(text + "\n")
            self.stream.flush()
        except Exception:  # noqa: S110 (the stream itself is broken: nowhere left to say it)
            pass


_direct: TurnBufferedHandler | None = None  # relay's own handler, once configure() ran


def emit(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """Log ``msg`` with ``fields``: the line ``logger.log(level, msg, extra={"fields":
    fields})`` writes. When relay's own handler (``configure``) is the only one the line would
    reach, it is formatted and queued directly, without a LogRecord: the per-event and
    per-attempt lines are most of what a busy relay logs. Anywhere else (another handler or a
    filter added, as in tests) it goes through ``logging`` as usual."""
    if not logger.isEnabledFor(level):
        return
    handler = _direct
    formatter = handler.formatter if handler is not None else None
    if (
        handler is None
        or not isinstance(formatter, FieldsFormatter)
        or not handler.sole_handler_of(logger, level)
    ):
        logger.log(level, msg, extra={"fields": fields})
        return
    try:
        text = formatter.line(time.time(), logging.getLevelName(level), logger.name, msg, fields)
    except Exception:  # let logging report it, as for any line it cannot format
        logger.log(level, msg, extra={"fields": fields})
        return
    handler.acquire()
    try:
        handler.add(text)
    finally:
        handler.release()


def level(name: str) -> int:
    """The logging level of a ``RELAY_LOG_LEVEL`` name (debug, info, warning, error)."""
    return int(logging.getLevelName(name.upper()))


def configure(fmt: str = "auto", level: int = logging.INFO, stream: IO[str] | None = None) -> bool:
    """Send every logger's lines to stderr (or ``stream``): relay's from ``level`` up, other
    libraries' from WARNING up; as JSON unless the stream is a terminal (or ``fmt`` says), in a
    console format for a person otherwise. Returns whether the lines are JSON."""
    global _direct
    stream = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(JSONFormatter() if use_json else TextFormatter())
    relay = logging.getLogger("relay")
    relay.handlers[:] = [handler]
    relay.setLevel(level)
    relay.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))
    _direct = handler
    # Every formatter here writes only the time, level, logger, message and fields: skip what a
    # log record would otherwise look up on each call (the logging HOWTO, "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no findCaller stack walk: file and line are never written
    return use_json


def capture_process() -> None:
    """Route what Python would print to stderr itself through the log pipeline: warnings, an
    uncaught exception (in the main thread or another), an exception nobody can raise (in a
    ``__del__``, say). For a process that ``configure``d its logs (``relay serve``)."""
    log = logging.getLogger("relay.process")
    logging.captureWarnings(True)

    def uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        log.critical("uncaught exception", exc_info=(kind, exc, tb))

    def in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
        thread = args.thread.name if args.thread is not None else "?"
        log.error("uncaught exception in a thread", exc_info=exc_info, extra={
            "fields": {"thread": thread}})  # fmt: skip

    def unraisable(info: Any) -> None:
        exc = info.exc_value
        exc_info = (info.exc_type, exc, info.exc_traceback) if exc is not None else None
        what = info.err_msg or "exception ignored"
        log.error(what, exc_info=exc_info, extra={"fields": {"object": repr(info.object)[:200]}})

    sys.excepthook = uncaught
    threading.excepthook = in_thread
    sys.unraisablehook = unraisable
