"""How many workers this host can run: a sanity check for --workers, SIGTTIN and `scale`.

A typo (``--workers 100000``) would otherwise fork until the host runs out
of memory, and since the first forks happen before the event loop, nothing
could stop it meanwhile. Async workers gain little beyond one per CPU, and
each costs tens of MiB, so a count far above either is refused (one line,
``--allow-many-workers`` to insist) and a merely high one is warned about.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from supervisor.config import format_size
from supervisor.system import cgroups

WORKER_MEMORY = 30 * 1024**2  # a booted uvicorn worker's private memory, roughly
CPU_FACTOR = 8  # refuse above this many workers per usable CPU...
MIN_CEILING = 32  # ...but never below this
WARN_FACTOR = 2  # warn above this many per CPU
MEMINFO = Path("/proc/meminfo")


class Verdict(msgspec.Struct, frozen=True):
    """``refuse``: the message is an error; else ``message`` (if any) is a warning."""

    refuse: bool
    message: str | None


def cpu_ceiling(cpus: int) -> int:
    return max(MIN_CEILING, CPU_FACTOR * max(1, cpus))


def memory_ceiling(available: int | None, running: int = 0) -> int | None:
    """Workers that fit in ``available`` bytes beside the ``running`` ones (already counted)."""
    if available is None:
        return None
    return running + available // WORKER_MEMORY


def judge(
    workers: int,
    cpus: int,
    available: int | None,
    *,
    allowed: bool,
    running: int = 0,
    subject: str | None = None,
) -> Verdict:
    """Whether ``workers`` is a sane count for ``cpus`` CPUs and ``available`` bytes of memory.

    ``subject`` starts the message ("--workers 100000"; "N workers" by default).
    """
    subject = subject or f"{workers} workers"
    by_cpu = cpu_ceiling(cpus)
    by_memory = memory_ceiling(available, running)
    limits = []
    if workers > by_cpu:
        limits.append(f"{cpus} usable CPU(s) allow up to {by_cpu}")
    if by_memory is not None and workers > by_memory and available is not None:
        limits.append(
            f"{format_size(available)} of available memory fits about {by_memory}"
            f" at ~{WORKER_MEMORY // 1024**2} MiB each"
        )
    if limits:
        too_many = f"{subject} is more than this host can run ({'; '.join(limits)})"
        if allowed:
            return Verdict(False, f"{too_many}; going ahead because of --allow-many-workers")
        return Verdict(True, f"{too_many}; use fewer, or allow it with --allow-many-workers.")
    if workers > WARN_FACTOR * max(1, cpus):
        return Verdict(
            False,
            f"{subject} on {cpus} usable CPU(s): async workers rarely gain from more than one"
            " or two per CPU",
        )
    return Verdict(False, None)


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """Bytes the host can still give (MemAvailable), capped by the cgroup's limit."""
    host: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                host = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        host = None
    limit = cgroups.memory_limit()
    known = [value for value in (host, limit) if value is not None]
    return min(known) if known else None


def judge_here(
    workers: int, *, allowed: bool, running: int = 0, subject: str | None = None
) -> Verdict:
    """:func:`judge` with this host's CPUs (affinity and cgroup quota, as for
    ``--workers auto``) and memory."""
    return judge(
        workers,
        cgroups.auto_workers(cgroups.cpu_limit(), cgroups.usable_cpus()),
        available_memory(),
        allowed=allowed,
        running=running,
        subject=subject,
    )
