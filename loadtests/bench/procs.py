"""Processes the harness starts: each in its own session, all killed at the end, even on errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")

# Every process group the harness started and has not reaped yet.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}

# Children of a server that are not workers: multiprocessing's helpers.
_HELPERS = ("resource_tracker", "semaphore_tracker", "forkserver")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    command: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path | None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (so one killpg reaches its workers) and track it."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()
    _LIVE[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """TERM the process group, wait up to ``timeout``, then KILL what is left and reap."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    # Workers that outlive their master (gunicorn's UvicornWorker does) share its group.
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    _LIVE.pop(proc.pid, None)


def stop_all() -> None:
    """Kill every process group still tracked; called from ``finally`` and signal handlers."""
    for proc in list(_LIVE.values()):
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        _LIVE.pop(proc.pid, None)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def workers_of(pid: int) -> list[psutil.Process]:
    """Live worker children of ``pid`` (zombies and multiprocessing helpers are not workers)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if is_worker(child)]


def is_worker(proc: psutil.Process) -> bool:
    """Alive, and not one of multiprocessing's helpers."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not any(helper in " ".join(proc.cmdline()) for helper in _HELPERS)
    except psutil.Error:
        return False


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.01) -> T | None:
    """Call ``check`` until it returns something other than None, or give up after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def quiet(busy_below: float = 0.1, window: float = 0.2, timeout: float = 5.0) -> float:
    """Wait until the CPUs are idle (under ``busy_below`` busy over ``window`` seconds), at
    most ``timeout``; the busy share last seen. A start timed right after another server's
    stop shares the CPUs with its dying workers and the kernel's writeback of its log."""
    deadline = time.monotonic() + timeout
    while True:
        busy = psutil.cpu_percent(interval=window) / 100
        if busy < busy_below or time.monotonic() > deadline:
            return busy


def log_size(path: Path) -> tuple[int, int]:
    """(lines, bytes) of a log file; (0, 0) when there is none."""
    lines = size = 0
    with contextlib.suppress(OSError), open(path, "rb") as log:
        while chunk := log.read(1 << 20):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def compact_log(path: Path, keep: int = 60) -> None:
    """Keep a long log's first and last ``keep`` lines: a run's access lines reach gigabytes."""
    lines, size = log_size(path)
    if lines <= 2 * keep:
        return
    head: list[bytes] = []
    tail: deque[bytes] = deque(maxlen=keep)
    with open(path, "rb") as log:
        for number, line in enumerate(log):
            if number < keep:
                head.append(line)
            else:
                tail.append(line)
    marker = f"[loadtests: {lines - len(head) - len(tail)} of {lines} lines ({size} bytes) cut]\n"
    path.write_bytes(b"".join([*head, marker.encode(), *tail]))
