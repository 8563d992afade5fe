"""A process's resident memory, read from /proc where there is one.

The supervisor samples every worker once a second. Reading ``/proc/PID/statm``
directly keeps psutil (2.6 MiB of the supervisor's RSS, 30 ms of its start)
out of the supervisor on Linux; elsewhere psutil answers.
"""

from __future__ import annotations

import os
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc/self").is_dir()


def rss(pid: int) -> int | None:
    """Resident bytes of ``pid``; None once it is gone."""
    if _PROC:
        # os.open/os.read: three syscalls, where a buffered open() makes nine.
        try:
            fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return int(os.read(fd, 256).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return None
        finally:
            os.close(fd)
    import psutil  # noqa: PLC0415 - only where there is no /proc

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class Resident:
    """Resident bytes of the workers, each read through its ``/proc/PID/statm`` kept open.

    Sampled once a second for the life of each worker: one pread a sample
    instead of open/read/close, and the descriptor follows the process (a
    reused pid number never answers for a dead worker: the read fails).
    Forked workers close these with every other inherited descriptor.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def of(self, pid: int) -> int | None:
        if not _PROC:
            return rss(pid)
        fd = self._fds.get(pid)
        if fd is None:
            try:
                fd = self._fds[pid] = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            return int(os.pread(fd, 256, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            self.forget(pid)
            return None

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def keep_only(self, pids: set[int]) -> None:
        """Close what is open for processes no longer watched."""
        for pid in self._fds.keys() - pids:
            self.forget(pid)
