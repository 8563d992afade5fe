"""A forked worker's clean start: what fork copied from the supervisor is undone.

Default signal dispositions, no inherited descriptors but the worker's own
(listeners, channel, log sinks, its output pipes), a parent-death signal so
it never outlives the supervisor, and fds 0-2 that always point somewhere
safe: if an app closes one, the next accepted client socket could take its
number and receive whatever is written there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import signal
import socket
from collections.abc import Iterable

from supervisor.errors import EXIT_OK
from supervisor.system import sdnotify

PR_SET_PDEATHSIG = 1
# A drain (SIGTERM) or fast stop (SIGQUIT) that came while the app was still loading:
# remembered here, honoured by the server as soon as it runs (a clean exit, not a death).
early_stop: int | None = None


def _remember_stop(sig: int, frame: object) -> None:
    global early_stop
    early_stop = early_stop or sig


# Signals meant for the supervisor that reach a worker too (`pkill -HUP -f
# supervisor`, a terminal's hangup or job control sent to the whole group):
# by default they would kill (HUP, USR2) or stop (TTIN, TTOU) every worker at
# once. A Python no-op rather than SIG_IGN, so programs the app starts get the
# defaults back at exec.
SUPERVISOR_ONLY_SIGNALS = (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)


def _not_for_workers(sig: int, frame: object) -> None:
    pass


def reset(supervisor_pid: int, keep: set[int]) -> None:
    """Undo what fork copied from the supervisor."""
    # Python 3.11 does not reset asyncio's running loop in a forked child.
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    # Python itself starts with these ignored (EPIPE becomes an exception).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _remember_stop)
    signal.signal(signal.SIGQUIT, _remember_stop)
    for sig in SUPERVISOR_ONLY_SIGNALS:
        signal.signal(sig, _not_for_workers)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # Only the supervisor talks to systemd (NotifyAccess=main; see sdnotify).
    sdnotify.scrub_environ(os.environ)
    _die_with_parent(supervisor_pid)
    _close_inherited_fds(keep)
    _occupy_standard_fds()


def _die_with_parent(supervisor_pid: int) -> None:
    # SIGTERM rather than SIGKILL: an orphaned worker still finishes the
    # requests it holds (bounded by ORPHAN_DRAIN_SECONDS), then exits.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat's getppid() check still catches orphaning
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(EXIT_OK)


def _close_inherited_fds(keep: set[int]) -> None:
    keep |= {0, 1, 2}
    try:
        open_fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                continue


def _occupy_standard_fds() -> None:
    """fds 0, 1 and 2 always open: /dev/null for stdin, and for 1/2 if they were closed."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)


def capture_output(output_fd: int) -> None:
    """JSON mode: fds 1 and 2 go to the supervisor, which wraps each line as a record."""
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)


def keep_from_children(fds: Iterable[int]) -> None:
    """The listeners, the channel and the pipes are the worker's alone: a process the app
    starts must not keep the port (or the supervisor's pipes) after the worker is gone.
    Not inherited across exec, and closed in a forked child of the worker."""
    owned = sorted(set(fds) - {-1})
    for fd in owned:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    os.register_at_fork(after_in_child=functools.partial(_close_all, owned))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    # uvloop serves on its own duplicate of each listener: close every listening socket.
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if _is_listening(fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


def _is_listening(fd: int) -> bool:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False  # not a socket
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        sock.detach()  # the descriptor is not ours to close here


def limit_memory(size: int) -> None:
    """--max-memory-hard: the kernel refuses the worker's data segment past ``size``
    (RLIMIT_DATA: an allocation beyond it fails with MemoryError instead of taking the
    host's memory)."""
    resource.setrlimit(resource.RLIMIT_DATA, (size, size))
