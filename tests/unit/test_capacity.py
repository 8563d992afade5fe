"""The worker-count sanity check (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.system import capacity, cgroups

MIB = 1024**2
GIB = 1024**3


@pytest.mark.parametrize(
    ("workers", "cpus", "available", "allowed", "expected"),
    [
        (1, 2, 8 * GIB, False, (False, None)),
        (4, 2, 8 * GIB, False, (False, None)),
        (5, 2, 8 * GIB, False, (False, "5 workers on 2 usable CPU(s)")),
        (32, 2, 8 * GIB, False, (False, "32 workers on 2 usable CPU(s)")),  # the floor: 32
        (33, 2, 8 * GIB, False, (True, "2 usable CPU(s) allow up to 32")),
        (64, 8, 8 * GIB, False, (False, "64 workers on 8 usable CPU(s)")),  # 8 per CPU
        (65, 8, 8 * GIB, False, (True, "8 usable CPU(s) allow up to 64")),
        (20, 16, 300 * MIB, False, (True, "300.0 MiB of available memory fits about 10")),
        (100000, 2, 20 * GIB, False, (True, "fits about 682 at ~30 MiB each")),
        (100000, 2, None, False, (True, "allow up to 32")),  # memory unknown: CPUs still count
        (100000, 2, 20 * GIB, True, (False, "going ahead because of --allow-many-workers")),
    ],
)
def test_judge(
    workers: int, cpus: int, available: int | None, allowed: bool, expected: tuple[bool, str | None]
) -> None:
    refuse, says = expected
    verdict = capacity.judge(workers, cpus, available, allowed=allowed)
    assert verdict.refuse is refuse
    if says is None:
        assert verdict.message is None
    else:
        assert verdict.message is not None and says in verdict.message
    if refuse:
        assert verdict.message is not None and "--allow-many-workers" in verdict.message


def test_running_workers_count_toward_the_memory_ceiling() -> None:
    # MemAvailable already excludes the memory of the workers that run.
    assert not capacity.judge(12, 16, 300 * MIB, allowed=False, running=4).refuse
    assert capacity.judge(15, 16, 300 * MIB, allowed=False, running=4).refuse


def test_available_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  4000000 kB\nMemFree: 10 kB\nMemAvailable:  2000000 kB\n")
    found = capacity.available_memory(meminfo)
    assert found is not None and found <= 2000000 * 1024
    assert capacity.available_memory(tmp_path / "missing") == cgroups.memory_limit()
