"""Logging for the supervisor and its workers: text or one JSON object per line.

The pid sits in a fixed place on every line so a worker's story can be
grepped. Uvicorn's own loggers ("uvicorn.error", "uvicorn.access") go through
the same handler and format.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from types import TracebackType
from typing import Any, TextIO

import msgspec

from supervisor.config import Config

TRACE = 5
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_json = msgspec.json.Encoder()

instance_id = ""
text_shows_instance = False  # set by the supervisor before forking; workers inherit it


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        instance = f"[{instance_id}] " if text_shows_instance and instance_id else ""
        # The id is escaped so a "%" in it cannot break the format string.
        instance = instance.replace("%", "%%")
        super().__init__(f"[%(asctime)s] [%(process)d] {instance}[%(levelname)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.created))


class JsonFormatter(logging.Formatter):
    """One object a line: timestamp, level, logger, pid, instance, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "instance_id": instance_id,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return _json.encode(payload).decode()


class LogFileHandler(logging.FileHandler):
    """A log file that can fail (disk full, volume gone) without taking the process down.

    The first failure of a streak is reported once on stderr; every later line
    is tried again, so logging resumes by itself when space comes back.
    """

    failing = False
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if self.failing and not self._failed_now:
            self.failing = False
            sys.stderr.write(f"Log file {self.baseFilename} is writable again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_now = True
        if self.failing:
            return
        self.failing = True
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or error
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"Cannot write to log file {self.baseFilename} ({reason}); "
                "dropping log lines until it is writable again\n"
            )


def _stream(config: Config) -> logging.Handler:
    if config.log_file and config.log_file != "-":
        return LogFileHandler(config.log_file, encoding="utf-8")
    return logging.StreamHandler(sys.stderr)


def configure(config: Config, *, role: str = "supervisor") -> None:
    """Install one handler on the root logger; uvicorn's loggers propagate to it."""
    global instance_id
    instance_id = config.instance_id or ""
    logging.addLevelName(TRACE, "TRACE")
    handler = _stream(config)
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    # Replace without closing: in a forked child the old handler's stream is the
    # supervisor's, and closing it could close an fd number already reused.
    root.handlers = [handler]
    root.setLevel(LEVELS[config.log_level])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uv_logger = logging.getLogger(name)
        uv_logger.handlers = []
        uv_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    # JSON access lines come from supervisor.middleware, with timing and request ids.
    access.disabled = not config.access_log or role == "supervisor" or config.log_format == "json"


def reopen() -> None:
    """SIGUSR1: reopen log files so logrotate can move them away."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()


def handler_fds() -> set[int]:
    """File descriptors behind the current log handlers (kept open across fork)."""
    fds: set[int] = set()
    for handler in logging.getLogger().handlers:
        stream: TextIO | None = getattr(handler, "stream", None)
        if stream is None:
            continue
        try:
            fds.add(stream.fileno())
        except (OSError, ValueError):
            continue
    return fds


class StartupErrorBuffer(logging.Filter):
    """Holds back a logger's errors during worker boot.

    If boot fails, the supervisor shows the error once for all workers
    instead of N interleaved tracebacks; if boot succeeds, they are logged.
    """

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(logger_name)
        self.records: list[logging.LogRecord] = []
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.active and record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def __enter__(self) -> StartupErrorBuffer:
        self.active = True
        self.logger.addFilter(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.active = False
        self.logger.removeFilter(self)

    def release(self) -> None:
        """Boot succeeded: log what was held back and stop holding."""
        self.active = False
        self.logger.removeFilter(self)
        for record in self.records:
            self.logger.handle(record)
        self.records.clear()

    def text(self) -> str:
        formatter = logging.Formatter("%(message)s")
        return "\n".join(formatter.format(record).rstrip() for record in self.records)
