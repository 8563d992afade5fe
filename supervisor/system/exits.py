"""Reaping children and saying in words how they ended."""

from __future__ import annotations

import os
import signal

from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_WORKER_BOOT_ERROR

_SIGNAL_HINTS = {
    signal.SIGKILL: "out of memory, or killed by hand?",
    signal.SIGSEGV: "crashed in native code",
    signal.SIGBUS: "crashed in native code",
    signal.SIGABRT: "aborted",
}
_CODE_HINTS = {
    EXIT_WORKER_BOOT_ERROR: "worker boot failure",
    EXIT_APP_LOAD_ERROR: "app load failure",
}


def reap_children() -> list[tuple[int, int]]:
    """Every (pid, wait status) of children that have exited, without blocking.

    As PID 1 this also collects orphans the kernel re-parented to us.
    """
    exited: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        if pid == 0:
            return exited
        exited.append((pid, status))


def describe_status(status: int) -> str:
    """ "exited with code 3 (worker boot failure)" or "killed by SIGKILL (out of memory?)"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            sig = signal.Signals(number)
        except ValueError:
            return f"killed by signal {number}"
        hint = _SIGNAL_HINTS.get(sig)
        return f"killed by {sig.name}" + (f" ({hint})" if hint else "")
    code = os.waitstatus_to_exitcode(status)
    hint = _CODE_HINTS.get(code)
    return f"exited with code {code}" + (f" ({hint})" if hint else "")


def exit_code(status: int) -> int:
    """The process's exit code, or -SIGNAL when a signal killed it."""
    return os.waitstatus_to_exitcode(status)
