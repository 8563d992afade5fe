"""Where log lines go: one file descriptor, whole lines, batched, bounded, never lost silently.

Every process (the supervisor and each worker) writes its lines straight to
the shared stdout/stderr (or a log file), not through the supervisor, so a
stalled supervisor never stalls a worker's logging. What that takes:

- Whole lines. Writes to a pipe of at most PIPE_BUF bytes are atomic, so a
  batch is cut at line boundaries into chunks of at most PIPE_BUF: lines from
  two workers never interleave mid-line (only a single line longer than
  PIPE_BUF can be split). Regular files are opened O_APPEND by the kernel's
  rules of the description we inherited; a write() to them is one piece.
- No blocking of the event loop on a slow reader. A pipe or a terminal is
  reopened through /proc/self/fd as a description of our own with O_NONBLOCK
  (setting O_NONBLOCK on the inherited description would change it for every
  process sharing it: the supervisor, its siblings, the shell). A socket
  (journald's stdout stream) is written with MSG_DONTWAIT.
- Batching. Access lines are queued and written once per event-loop turn
  (``call_soon``); log records are written at once, behind what is queued.
- Backpressure, not loss. Lines the reader has not taken yet wait here; when
  more than HIGH_WATER bytes wait, the writer stops the event loop in a
  bounded poll (new requests wait in the shared accept queue) until the
  reader catches up, calling ``on_stall`` every STALL_BEAT seconds so the
  worker can still tell the supervisor that it is alive. Memory stays
  bounded; nothing is dropped while the descriptor still works.
- A descriptor that fails (disk full, closed pipe) is reported once on the
  next working line and its lines dropped while it fails; writing resumes by
  itself.
- Every line once, whoever writes it. Apps log from threads of their own
  (Django's sync_to_async, Litestar's queue listener) into the sink the
  event loop writes access lines to, and a signal handler can log between
  a write() and the backlog catching up with it. The backlog is only touched
  under a lock; ``queued`` only by the thread that owns the sink (other
  threads add to the backlog directly); a flush re-entered from a handler
  leaves its line queued for the flush it interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable

PIPE_BUF = select.PIPE_BUF
HIGH_WATER = 1 << 18  # bytes waiting before the writer applies backpressure
LOW_WATER = 1 << 16  # ... until this little is left
STALL_BEAT = 0.5
STALL_POLL_MS = 100
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class LineSink:
    """Lines (bytes, newline-terminated) to one descriptor; see the module docstring."""

    def __init__(
        self, fd: int, *, name: str = "", close: bool = True, report_fd: int | None = 2
    ) -> None:
        self.name = name or f"fd {fd}"
        self.fd = fd
        self._close_fd = close
        self.report_fd = report_fd  # where a failure is reported (never this sink itself)
        self.path: str | None = None
        self._poll_first = False
        self._socket: socket.socket | None = None
        self.queued: list[bytes] = []
        self.backlog = bytearray()  # encoded, not yet accepted by the kernel
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduled = False
        self._watching = False
        self.failing: str | None = None
        self.on_stall: Callable[[], None] | None = None
        # The one warning line of a first stall, in the process's log format.
        self.stall_note: Callable[[], bytes] | None = None
        self.stalls = 0
        self.stalled_seconds = 0.0
        self.dropped = 0
        self._chunk = 1 << 16
        self._lock = threading.RLock()
        self._owner = threading.get_ident()  # the thread whose event loop writes access lines
        self._flushing = False
        self._probe()

    # Opening -----------------------------------------------------------------

    @classmethod
    def for_fd(cls, fd: int, name: str = "", report_fd: int | None = None) -> LineSink:
        """A sink over a private description of ``fd`` (stdout, stderr)."""
        private, nonblocking = _private_description(fd)
        sink = cls(private, name=name, report_fd=report_fd)
        sink._poll_first = not nonblocking and sink._chunk == PIPE_BUF
        return sink

    @classmethod
    def for_path(cls, path: str, report_fd: int | None = 2) -> LineSink:
        """A log file, opened for appending (created 0644 if missing)."""
        sink = cls(os.open(path, _FILE_FLAGS, 0o644), name=path, report_fd=report_fd)
        sink.path = path
        return sink

    def reopen(self) -> None:
        """SIGUSR1 (logrotate): the same descriptor number, now on a fresh file at ``path``."""
        if self.path is None:
            return
        self.flush()
        with self._lock:
            try:
                fresh = os.open(self.path, _FILE_FLAGS, 0o644)
            except OSError as exc:
                self._fail(exc)
                return
            os.dup2(fresh, self.fd, inheritable=False)
            os.close(fresh)

    def after_fork(self) -> None:
        """In a new worker: the parent's event loop and pending state are not ours."""
        self.loop = None
        self.scheduled = False
        self._watching = False
        self.queued.clear()
        self.backlog.clear()
        self.on_stall = None
        # Only the forking thread goes on, and a lock another thread held is never released.
        self._lock = threading.RLock()
        self._owner = threading.get_ident()
        self._flushing = False

    def _probe(self) -> None:
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            return
        if stat.S_ISSOCK(mode):
            self._socket = socket.socket(fileno=os.dup(self.fd))
        # A regular file takes a whole write at once; a pipe, PIPE_BUF at a time.
        self._chunk = PIPE_BUF if stat.S_ISFIFO(mode) else 1 << 16

    # Writing -----------------------------------------------------------------

    def write(self, line: bytes) -> None:
        """Queue one line for the end of this event-loop turn (the access log's path)."""
        self.queued.append(line)
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        """Flush at the end of this event-loop turn (now, without a loop). The worker's
        request observer appends to ``queued`` itself and calls this once per turn: the
        call to :meth:`write` was ~1k instructions of a ~125k request."""
        self.scheduled = True
        if self.loop is not None:
            self.loop.call_soon(self.flush)
        else:
            self.flush()

    def write_now(self, line: bytes) -> None:
        """Write one line at once, after everything queued (log records)."""
        if threading.get_ident() != self._owner:
            self._write_from_thread(line)
            return
        self.queued.append(line)
        self.flush()

    def flush(self) -> None:
        self.scheduled = False
        with self._lock:
            if self._flushing:
                return  # re-entered (a handler logging mid-write): the flush below us writes it
            self._flushing = True
            try:
                self._flush()
            finally:
                self._flushing = False

    def _flush(self) -> None:
        while self.queued:
            # Swapped, not cleared after the join: a line a signal handler adds meanwhile stays.
            queued, self.queued = self.queued, []
            self.backlog += b"".join(queued)
            self._write_backlog()
        if not self.backlog:
            return
        if self.loop is None:
            # No event loop to come back on (the supervisor, a worker before it
            # serves): what is left is written now, waiting for the reader.
            self._wait_for_reader(0)
        elif len(self.backlog) > HIGH_WATER:
            self._wait_for_reader(LOW_WATER)
        if self.queued:
            self._flush()  # added by on_stall or a handler while we waited
        elif self.backlog:
            self._watch_writable()

    def _write_from_thread(self, line: bytes) -> None:
        """A record from an app's thread: written now; backpressure holds that thread only."""
        with self._lock:
            self.backlog += line
            self._write_backlog()
            loop = self.loop
            if self.backlog and loop is None:
                self._wait_for_reader(0)  # nobody else will come back for it
            left = len(self.backlog)
        if not left or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing; flush_all writes it
            loop.call_soon_threadsafe(self.flush)  # the loop thread watches for writability
        # Over the high-water mark this thread waits (not the loop, which holds no lock
        # meanwhile and keeps telling the supervisor it is alive), for a bounded time.
        deadline = time.monotonic() + STALL_BEAT * 20
        while left > HIGH_WATER and time.monotonic() < deadline:
            time.sleep(STALL_POLL_MS / 1000)
            with self._lock:
                left = len(self.backlog)

    def _write_backlog(self) -> None:
        backlog = self.backlog
        while backlog:
            end = len(backlog)
            if end > self._chunk:
                cut = backlog.rfind(b"\n", 0, self._chunk)
                end = cut + 1 if cut >= 0 else self._chunk
            try:
                written = self._write(backlog[:end])  # a copy: backlog may be resized
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                self._fail(exc)
                return
            del backlog[:written]
            if self.failing is not None:
                self._recover()

    def _write(self, data: bytes | bytearray) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        if self._poll_first and not select.select([], [self.fd], [], 0)[1]:
            # A pipe we could not reopen non-blocking: POLLOUT means a free
            # PIPE_BUF slot, so a chunk of at most PIPE_BUF does not block.
            raise BlockingIOError(errno.EAGAIN, "pipe full")
        return os.write(self.fd, data)

    def _wait_for_reader(self, low_water: int) -> None:
        """Backpressure: hold the event loop until the reader has taken all but ``low_water``."""
        self.stalls += 1
        if self.stalls == 1 and self.stall_note is not None:
            # Said once, in line with the rest: it comes out when the reader catches up.
            self.backlog += self.stall_note()
        started = time.monotonic()
        beat = started
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while len(self.backlog) > low_water and self.failing is None:
            with contextlib.suppress(InterruptedError):
                poller.poll(STALL_POLL_MS)
            self._write_backlog()
            now = time.monotonic()
            if self.on_stall is not None and now - beat >= STALL_BEAT:
                beat = now
                self.on_stall()
        self.stalled_seconds += time.monotonic() - started

    def _watch_writable(self) -> None:
        if self._watching or self.loop is None or self.failing is not None:
            return
        try:
            self.loop.add_writer(self.fd, self._on_writable)
        except (OSError, ValueError, NotImplementedError):
            return  # a regular file: never "not writable"; the next flush retries
        self._watching = True

    def _on_writable(self) -> None:
        with self._lock:
            self._write_backlog()
            if not self.backlog and self.loop is not None:
                self.loop.remove_writer(self.fd)
                self._watching = False

    # Failure -----------------------------------------------------------------

    def _fail(self, exc: OSError) -> None:
        """The descriptor refuses lines: say so once, drop them while it lasts."""
        self.dropped += max(self.backlog.count(b"\n"), 1)
        self.backlog.clear()
        if self.failing is not None:
            return
        self.failing = exc.strerror or str(exc)
        self._report(
            f"Cannot write to log file {self.name} ({self.failing}); dropping log lines"
            " until it is writable again\n"
        )

    def _recover(self) -> None:
        self._report(f"Log file {self.name} is writable again ({self.dropped} line(s) were lost)\n")
        self.failing = None
        self.dropped = 0

    def _report(self, text: str) -> None:
        if self.report_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.report_fd, text.encode())

    def close(self) -> None:
        self.flush()
        if self._watching and self.loop is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.fd)
            self._watching = False
        if self._socket is not None:
            self._socket.close()
        if self._close_fd:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def fileno(self) -> int:
        return self.fd


def _private_description(fd: int) -> tuple[int, bool]:
    """(a descriptor for what ``fd`` points at, whether it is non-blocking and ours alone)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        with contextlib.suppress(OSError):
            return os.open(f"/proc/self/fd/{fd}", flags), True
    # A regular file keeps the inherited description (and its O_APPEND, or the
    # offset the shell's ">" gave it); a socket is written with MSG_DONTWAIT.
    return os.dup(fd), False
