"""Container limits from the cgroup filesystem, for `--workers auto` and `--max-memory auto`.

In a container ``os.cpu_count()`` is the host's CPU count: a pod limited to
two CPUs on a 64-core node would fork 64 workers and be throttled. The limit
the container really has is the CFS quota: ``cpu.max`` on cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` on v1; the memory limit is
``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1). Every reader takes the
cgroup root as an argument so tests point it at fixture files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a huge number near 2**63 rounded to the page size.
_V1_UNLIMITED = 1 << 60
# Room left in the container for the supervisor and shared pages when the
# per-worker ceiling is derived from the container's memory limit.
MEMORY_HEADROOM = 0.85


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup_dir(root: Path, proc_self_cgroup: Path, controller: str) -> Path:
    """The directory of this process's cgroup under ``root``.

    Inside a container with a cgroup namespace the process sits at the root
    ("0::/"); on a host (or without a namespace) it sits deeper, and the
    limit that applies is in that directory.
    """
    text = _read(proc_self_cgroup) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        wanted = controllers == "" if controller == "" else controller in controllers.split(",")
        if wanted:
            candidate = root / path.lstrip("/")
            if candidate.is_dir():
                return candidate
    return root


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max``: "max 100000" (no limit) or "200000 100000" (2 CPUs)."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1: quota -1 means no limit."""
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_memory_limit(text: str) -> int | None:
    """``memory.max`` / ``memory.limit_in_bytes``: "max" or a huge v1 value mean none."""
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value <= 0 or value >= _V1_UNLIMITED:
        return None
    return value


def _read_nearest(directories: tuple[Path, ...], name: str) -> str | None:
    """The file in this process's own cgroup, else at the controller's root."""
    for directory in directories:
        text = _read(directory / name)
        if text is not None:
            return text
    return None


def _scope(root: Path, proc_self_cgroup: Path, controller: str) -> tuple[Path, Path]:
    return _own_cgroup_dir(root, proc_self_cgroup, controller), root


def cpu_limit(
    root: Path = CGROUP_ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs this process may use according to its cgroup, or None when unlimited."""
    text = _read_nearest(_scope(root, proc_self_cgroup, ""), "cpu.max")
    if text is not None:
        return parse_cpu_max(text)
    for name in ("cpu,cpuacct", "cpu"):
        v1 = root / name
        if not v1.is_dir():
            continue
        for directory in _scope(v1, proc_self_cgroup, "cpu"):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                return parse_cfs(quota, period)
    return None


def memory_limit(
    root: Path = CGROUP_ROOT, proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes of memory this process's cgroup may use, or None when unlimited."""
    text = _read_nearest(_scope(root, proc_self_cgroup, ""), "memory.max")
    if text is None and (root / "memory").is_dir():
        scope = _scope(root / "memory", proc_self_cgroup, "memory")
        text = _read_nearest(scope, "memory.limit_in_bytes")
    return parse_memory_limit(text) if text is not None else None


def usable_cpus() -> int:
    """CPUs in this process's affinity mask (taskset, cpuset), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_workers(limit: float | None, cpu_count: int) -> int:
    """One async worker per CPU the container may use: a 1.5-CPU quota gets 2, never 0."""
    cpus = max(1, cpu_count)
    if limit is None:
        return cpus
    return max(1, min(cpus, math.ceil(limit - 1e-9)))


def auto_max_memory(limit: int | None, workers: int) -> int | None:
    """A per-worker RSS ceiling that keeps N workers inside the container's limit."""
    if limit is None:
        return None
    return int(limit * MEMORY_HEADROOM / max(1, workers))


def describe_limits(cpus: float | None, memory: int | None) -> str:
    cpu_text = f"CPU quota {cpus:g}" if cpus is not None else "no CPU quota"
    if memory is None:
        return f"{cpu_text}, no memory limit"
    return f"{cpu_text}, memory limit {memory / 1024**2:.0f} MiB"
