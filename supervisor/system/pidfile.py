"""The ``--pid`` file: written without following a symlink, replaced atomically, ours alone.

The pid is written to a new file in the same directory (``O_EXCL |
O_NOFOLLOW``: never an existing file, never through a symlink), which then
takes the pid file's name: ``link`` when there is none (atomic
create-if-absent), ``rename`` over a stale one (a symlink planted there is
replaced, its target never touched). The supervisor keeps the file open with
an exclusive ``flock`` for its whole life, so a pid file whose lock is held
names a live supervisor, and a stale one (SIGKILL, a reboot, a recycled pid)
never blocks a start. At exit the file is removed only if it is still ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from supervisor.errors import ConfigError, SupervisorError

_PLACE_ATTEMPTS = 5


class AlreadyRunningError(SupervisorError):
    """The --pid file belongs to a supervisor that is still running."""


def parse_pid(text: str) -> int | None:
    """The pid a pid file holds, or None for anything but one positive number."""
    stripped = text.strip()
    if not stripped.isdigit() or int(stripped) <= 0:
        return None
    return int(stripped)


def live_holder(recorded: int | None, locked: bool | None, alive: bool, own_pid: int) -> int | None:
    """The pid of the live supervisor a pid file names (0: unknown), or None when it is stale.

    ``locked`` says whether another process holds the file's lock (None: the
    filesystem cannot tell, then a live process with that pid counts);
    ``alive`` whether a process with the recorded pid exists.
    """
    if locked:
        return recorded if recorded is not None else 0
    if locked is None and recorded is not None and recorded != own_pid and alive:
        return recorded
    return None


class PidFile:
    """An acquired pid file; :meth:`release` at exit."""

    def __init__(self, path: Path, fd: int, pid: int) -> None:
        self.path = path
        self.fd = fd
        self.pid = pid

    def is_ours(self) -> bool:
        try:
            here, mine = os.lstat(self.path), os.fstat(self.fd)
            content = os.pread(self.fd, 64, 0).decode("ascii", "replace")
        except OSError:
            return False
        same = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
        return same and parse_pid(content) == self.pid

    def release(self) -> None:
        """Remove the file if it still holds our pid, then drop the lock."""
        if self.fd < 0:
            return
        if self.is_ours():
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def acquire(path_text: str) -> PidFile:
    """Write our pid to ``path_text`` unless a live supervisor holds it."""
    path = Path(path_text)
    pid = os.getpid()
    temp = path.with_name(f".{path.name}.{pid}.tmp")
    fd = _create_exclusive(temp, path)
    try:
        os.write(fd, f"{pid}\n".encode())
        with contextlib.suppress(OSError):  # no flock here (some network filesystems)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _place(temp, path, pid)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    return PidFile(path, fd, pid)


def _create_exclusive(temp: Path, path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            return os.open(temp, flags, 0o644)
        except FileExistsError:
            # Left by an earlier process with our pid (a container restart), or
            # planted: unlink removes the name itself, whatever it points to.
            with contextlib.suppress(OSError):
                temp.unlink()
        except OSError as exc:
            raise ConfigError(f"--pid {path}: cannot write it ({exc.strerror or exc}).") from exc
    raise ConfigError(f"--pid {path}: cannot write it ({temp} keeps reappearing).")


def _place(temp: Path, path: Path, pid: int) -> None:
    for _ in range(_PLACE_ATTEMPTS):
        try:
            os.link(temp, path)
            return
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise ConfigError(f"--pid {path}: cannot write it ({exc.strerror}).") from exc
            if not os.path.lexists(path):  # no hard links here: rename is still atomic
                _replace(temp, path)
                return
        holder = _holder(path, pid)
        if holder is not None:
            running = f"PID {holder}" if holder else "another process (its pid file is locked)"
            raise AlreadyRunningError(
                f"--pid {path}: a supervisor is already running as {running}; stop it first,"
                " or give this one another --pid file."
            )
        if os.path.lexists(path):
            _replace(temp, path)
            return
    raise ConfigError(f"--pid {path}: cannot write it (the file keeps changing under us).")


def _replace(temp: Path, path: Path) -> None:
    try:
        temp.replace(path)
    except OSError as exc:
        raise ConfigError(f"--pid {path}: cannot write it ({exc.strerror or exc}).") from exc


def _holder(path: Path, own_pid: int) -> int | None:
    """Who holds the existing pid file: see :func:`live_holder`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # gone meanwhile: link again
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a symlink: replaced below, never followed
        raise ConfigError(f"--pid {path}: cannot read it ({exc.strerror or exc}).") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"--pid {path}: the path exists and is not a regular file.")
        recorded = parse_pid(os.read(fd, 64).decode("ascii", "replace"))
        locked = _is_locked(fd)
    finally:
        os.close(fd)
    return live_holder(recorded, locked, recorded is not None and _alive(recorded), own_pid)


def _is_locked(fd: int) -> bool | None:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    return False  # our shared lock goes with the close


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_over(path_text: str) -> PidFile:
    """Write our pid to ``path_text`` whoever holds it: a USR2 successor replacing the
    supervisor that started it (which still runs, and leaves the file alone at exit
    since it no longer names it)."""
    path = Path(path_text)
    pid = os.getpid()
    temp = path.with_name(f".{path.name}.{pid}.tmp")
    fd = _create_exclusive(temp, path)
    try:
        os.write(fd, f"{pid}\n".encode())
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _replace(temp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return PidFile(path, fd, pid)
