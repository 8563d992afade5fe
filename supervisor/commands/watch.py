"""``python -m supervisor status --watch``: the pool, live, refreshed every second.

Each refresh is one `status` over the control socket (found again each time,
so the view follows a USR2 upgrade to the new supervisor). Rates are the
difference between two refreshes: requests/s from the request counts, CPU%
from each worker's CPU time in /proc (the supervisor runs on this host; a
worker whose /proc entry we cannot read shows "-"). CONNS counts a worker's
open connections, WebSockets and streams included.

On a terminal the view is drawn with curses from the standard library (no
extra dependency for an operator's box; `q` or Ctrl-C leaves); otherwise
each refresh is printed as plain lines, for a pipe or a log.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import msgspec

from supervisor.commands.status import _age
from supervisor.commands.wire import Status
from supervisor.config import format_size

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` from /proc, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


class Sample(msgspec.Struct):
    """One refresh: the status, when it was taken, each worker's CPU seconds."""

    status: Status
    at: float
    cpu: dict[int, float | None] = msgspec.field(default_factory=dict)


def rates(before: Sample | None, now: Sample) -> dict[int, tuple[float | None, float | None]]:
    """Per worker pid: (requests/s, CPU%) since ``before``; None where unknown."""
    found: dict[int, tuple[float | None, float | None]] = {}
    previous = {w.pid: w for w in before.status.workers} if before else {}
    elapsed = now.at - before.at if before else 0.0
    for worker in now.status.workers:
        old = previous.get(worker.pid)
        if old is None or before is None or elapsed <= 0:
            found[worker.pid] = (None, None)
            continue
        rps = max(worker.requests - old.requests, 0) / elapsed
        cpu_now, cpu_then = now.cpu.get(worker.pid), before.cpu.get(worker.pid)
        cpu = None
        if cpu_now is not None and cpu_then is not None:
            cpu = max(cpu_now - cpu_then, 0.0) / elapsed * 100
        found[worker.pid] = (rps, cpu)
    return found


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADER = (
    f"{'PID':>8} {'GEN':>3} {'STATE':<9} {'AGE':>7} {'REQ/S':>7} {'IN-FL':>5} "
    f"{'CONNS':>5} {'RSS':>10} {'CPU%':>6}  NOTE"
)


def frame(before: Sample | None, now: Sample) -> list[str]:
    """The lines of one view: the supervisor, the workers, the pool totals."""
    status = now.status
    per_worker = rates(before, now)
    stopping = f"  STOPPING ({status.stopping})" if status.stopping else ""
    lines = [
        f"supervisor {status.pid}  version {status.version}  app {status.app}  up"
        f" {_age(status.uptime_s)}  workers {status.totals.workers}/{status.target_workers}"
        f"  generation {status.generation}{stopping}",
        HEADER,
    ]
    # The pool's rate from its own count, which keeps what exited workers served.
    total_rps = None
    if before is not None and now.at > before.at:
        served = status.totals.requests - before.status.totals.requests
        total_rps = max(served, 0) / (now.at - before.at)
    known = [cpu for _, cpu in per_worker.values() if cpu is not None]
    total_cpu = sum(known) if known else None
    for w in status.workers:
        rps, cpu = per_worker[w.pid]
        note = f"retiring: {w.retiring}" if w.retiring else ""
        lines.append(
            f"{w.pid:>8} {w.generation:>3} {w.state:<9} {_age(w.age_s):>7} {_num(rps):>7}"
            f" {w.in_flight:>5} {w.connections:>5} {format_size(w.rss_bytes):>10}"
            f" {_num(cpu):>6}  {note}".rstrip()
        )
    totals = status.totals
    restarts = ", ".join(f"{k} {v}" for k, v in totals.restarts.items()) or "none"
    lines.append(
        f"total: {_num(total_rps)} req/s, {totals.requests} requests, {totals.in_flight} in"
        f" flight, RSS {format_size(totals.rss_bytes)}, CPU {_num(total_cpu)}%;"
        f" restarts: {restarts}"
    )
    if status.boot_failing:
        lines.append(f"new workers fail to boot: {status.boot_failing}")
    return lines


def samples(fetch: Callable[[], Status], interval: float) -> Iterator[Sample]:
    """A sample now, then one every ``interval`` seconds (ControlError ends it)."""
    while True:
        status = fetch()
        yield Sample(status, time.monotonic(), {w.pid: cpu_seconds(w.pid) for w in status.workers})
        time.sleep(interval)


def plain(fetch: Callable[[], Status], interval: float, count: int | None, out: TextIO) -> int:
    """Not a terminal: each refresh as plain lines, a blank line between two."""
    before = None
    for number, sample in enumerate(samples(fetch, interval), start=1):
        if before is not None:
            out.write("\n")
        out.write("\n".join(frame(before, sample)) + "\n")
        out.flush()
        before = sample
        if count is not None and number >= count:
            break
    return 0


def live(fetch: Callable[[], Status], interval: float, count: int | None) -> int:
    """A terminal: the view drawn in place with curses until q or Ctrl-C."""
    import curses  # noqa: PLC0415 - only a terminal needs it

    def draw(screen: Any) -> None:
        curses.curs_set(0)
        screen.timeout(int(interval * 1000))
        before = None
        shown = 0
        while count is None or shown < count:
            sample = Sample(fetch(), time.monotonic())
            sample.cpu = {w.pid: cpu_seconds(w.pid) for w in sample.status.workers}
            lines = [*frame(before, sample), "", "q: quit"]
            height, width = screen.getmaxyx()
            screen.erase()
            for row, line in enumerate(lines[: height - 1]):
                with contextlib.suppress(curses.error):  # the last cell of a small window
                    screen.addnstr(row, 0, line, width - 1)
            screen.refresh()
            before, shown = sample, shown + 1
            if screen.getch() in (ord("q"), ord("Q")):
                return

    with contextlib.suppress(KeyboardInterrupt):
        curses.wrapper(draw)
    return 0


def watch(fetch: Callable[[], Status], *, interval: float = 1.0, count: int | None = None) -> int:
    if sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb":
        return live(fetch, interval, count)
    try:
        return plain(fetch, interval, count, sys.stdout)
    except KeyboardInterrupt:
        return 0
