"""How a line looks: text with the pid in a fixed place, or one JSON object a line.

JSON never loses a record: an ``extra`` value that JSON cannot encode (Django
puts the request object into ``django.request`` records) is written as its
repr, and a record whose message cannot even be formatted still comes out
with its raw template and arguments.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}
TEXT_TIME = "%Y-%m-%d %H:%M:%S %z"


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the record
        return f"<unrepresentable {type(value).__name__}>"


_encoder = msgspec.json.Encoder(enc_hook=_repr)


class Clock:
    """Formatted timestamps, recomputed once a second (strftime costs a microsecond)."""

    __slots__ = ("_clf", "_iso", "_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""
        self._iso = ""
        self._clf = ""

    def _tick(self, second: int) -> None:
        self._second = second
        local = time.localtime(second)
        self._text = time.strftime(TEXT_TIME, local)
        self._clf = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", local)
        self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))

    def text(self, now: float) -> str:
        """ "2026-12-01 09:00:00 +0000" (local time, like the other text lines)."""
        second = int(now)
        if second != self._second:
            self._tick(second)
        return self._text

    def clf(self, now: float) -> str:
        """ "[01/Dec/2026:09:00:00 +0000]", Apache's common log format (gunicorn's %(t)s)."""
        second = int(now)
        if second != self._second:
            self._tick(second)
        return self._clf

    def iso(self, now: float) -> str:
        """ "2026-12-01T09:00:00.123Z" (UTC, millisecond precision)."""
        second = int(now)
        if second != self._second:
            self._tick(second)
        return f"{self._iso}.{int((now - second) * 1000):03d}Z"


def safe_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad %-template or arguments: keep both, lose nothing
        return f"{record.msg!r} % {record.args!r}"


class TextFormatter(logging.Formatter):
    """``[time] [pid] [instance] [LEVEL] message``; the instance only when it was chosen."""

    def __init__(self, instance: str = "") -> None:
        # The id is escaped so a "%" in it cannot break the format string.
        prefix = f"[{instance.replace('%', '%%')}] " if instance else ""
        super().__init__(f"[%(asctime)s] [%(process)d] {prefix}[%(levelname)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime(TEXT_TIME, time.localtime(record.created))

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self._style.format(record)

    def format(self, record: logging.LogRecord) -> str:
        record.message = safe_message(record)
        record.asctime = self.formatTime(record)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


class JsonFormatter(logging.Formatter):
    """One object a line: timestamp, level, logger, pid, instance_id, message, then extras."""

    def __init__(self, instance: str = "") -> None:
        super().__init__()
        self.instance = instance
        self.clock = Clock()

    def payload(self, record: logging.LogRecord) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "timestamp": self.clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "instance_id": self.instance,
            "message": safe_message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return payload

    def format(self, record: logging.LogRecord) -> str:
        return encode_json(self.payload(record)).decode()


def encode_json(payload: dict[str, Any]) -> bytes:
    """JSON for a log payload, whatever its values hold."""
    try:
        return _encoder.encode(payload)
    except Exception:  # non-string keys, cycles, a failing enc_hook...
        safe = {
            key: value if isinstance(value, str | int | float | bool | None) else _repr(value)
            for key, value in payload.items()
        }
        return _encoder.encode(safe)
