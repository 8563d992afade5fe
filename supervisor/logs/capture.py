"""A worker's raw output as log records: print(), C-level writes to fds 1 and 2, stack dumps.

In JSON mode every line must be one object, but an app also writes outside
logging: ``print()``, a library's ``sys.stderr.write``, a C extension or a
child process writing to fd 1/2, and faulthandler's stack dump of a hung
worker. So:

- ``sys.stdout`` / ``sys.stderr`` of a JSON-mode worker are :class:`LogStream`
  objects: each complete line becomes a record of the ``stdout`` / ``stderr``
  logger (the worker's own pid, our format), like gunicorn's capture_output;
- the worker's fds 1 and 2 point at a pipe the supervisor reads
  (:class:`PipeLines`), so what bypasses Python is wrapped too;
- faulthandler writes to a pipe of its own, which the supervisor reads to
  the end when the worker is gone and logs as one record (the stack in a
  ``stack`` field in JSON mode, after the message in text mode).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

STDOUT_LEVEL = logging.INFO
STDERR_LEVEL = logging.WARNING
MAX_LINE = 64 * 1024  # a "line" longer than this is cut into records of this size
MAX_DUMP = 1 << 20


class LogStream(io.TextIOBase):
    """A text stream whose lines are log records (sys.stdout/sys.stderr in JSON mode)."""

    def __init__(self, name: str, level: int, fd: int) -> None:
        super().__init__()
        self._logger = logging.getLogger(name)
        self._level = level
        self._fd = fd
        self._partial = ""
        self._busy = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # the captured pipe: faulthandler.enable() and subprocesses use it

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._busy:  # logging itself wrote to stderr (handleError): no loop
            with contextlib.suppress(OSError):
                os.write(self._fd, text.encode("utf-8", "replace"))
            return len(text)
        self._partial += text
        if "\n" in self._partial or len(self._partial) > MAX_LINE:
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._emit(line)
            if len(self._partial) > MAX_LINE:
                self._emit(self._partial)
                self._partial = ""
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)

    def _emit(self, line: str) -> None:
        # Straight to our own handler, not through the logger tree: a handler the app put
        # there may write to sys.stderr again from another thread (Litestar's queue
        # listener), which would loop for ever, one record chasing the next.
        record = self._logger.makeRecord(
            self._logger.name, self._level, "(stream)", 0, "%s", (line.rstrip("\r"),), None
        )
        self._busy = True
        try:
            direct = _our_handler()
            if direct is not None:
                direct.handle(record)
            else:
                self._logger.handle(record)
        finally:
            self._busy = False


def _our_handler() -> logging.Handler | None:
    from supervisor.logs.handlers import state  # noqa: PLC0415 - handlers imports nothing of ours

    return state.handler


class PipeLines:
    """The supervisor's end of a worker's output pipe: bytes in, complete lines out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._partial = b""

    def read(self) -> tuple[list[str], bool]:
        """Every complete line waiting now (non-blocking), and whether the pipe closed."""
        lines: list[str] = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return lines, False
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if self._partial:
                    lines.append(self._partial.decode("utf-8", "replace"))
                    self._partial = b""
                return lines, True
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            lines.extend(line.rstrip(b"\r").decode("utf-8", "replace") for line in complete)
            if len(self._partial) > MAX_LINE:
                lines.append(self._partial.decode("utf-8", "replace"))
                self._partial = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def read_dump(fd: int) -> str:
    """Everything faulthandler wrote (the worker is gone, so this ends), bounded."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_DUMP:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace").rstrip()


def worker_record(name: str, level: int, message: str, pid: int, **extra: object) -> None:
    """Log ``message`` as if the worker ``pid`` had logged it (the supervisor relays it)."""
    target = logging.getLogger(name)
    if not target.isEnabledFor(level):
        return
    record = target.makeRecord(name, level, "(worker)", 0, "%s", (message,), None, extra=extra)
    record.process = pid
    target.handle(record)
