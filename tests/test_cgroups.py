"""Container limits parsed from fixture cgroup trees (v2 and v1), and the auto policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import make_config
from supervisor.system import cgroups


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.fixture
def no_proc(tmp_path: Path) -> Path:
    return write(tmp_path / "proc", {"self-cgroup": "0::/"}) / "self-cgroup"


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000", 0.5)],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, no_proc: Path, cpu_max: str, expected: float) -> None:
    root = write(tmp_path / "cg", {"cpu.max": cpu_max})
    assert cgroups.cpu_limit(root, no_proc) == expected


def test_cgroup_v2_nested_cgroup_of_this_process(tmp_path: Path) -> None:
    root = write(
        tmp_path / "cg",
        {
            "cpu.max": "max 100000",
            "kubepods/pod1/cpu.max": "300000 100000",
            "kubepods/pod1/memory.max": str(2 * 1024**3),
        },
    )
    proc = write(tmp_path / "proc", {"cgroup": "0::/kubepods/pod1"}) / "cgroup"
    assert cgroups.cpu_limit(root, proc) == 3.0
    assert cgroups.memory_limit(root, proc) == 2 * 1024**3


def test_cgroup_v1_cfs_quota(tmp_path: Path, no_proc: Path) -> None:
    root = write(
        tmp_path / "cg",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "250000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "536870912",
        },
    )
    assert cgroups.cpu_limit(root, no_proc) == 2.5
    assert cgroups.memory_limit(root, no_proc) == 512 * 1024**2


def test_cgroup_v1_unlimited(tmp_path: Path, no_proc: Path) -> None:
    root = write(
        tmp_path / "cg",
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert cgroups.cpu_limit(root, no_proc) is None
    assert cgroups.memory_limit(root, no_proc) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path, no_proc: Path) -> None:
    assert cgroups.cpu_limit(tmp_path, no_proc) is None
    assert cgroups.memory_limit(tmp_path, no_proc) is None


@pytest.mark.parametrize(
    ("text", "expected"), [("max", None), ("1073741824", 1024**3), ("garbage", None), ("0", None)]
)
def test_parse_memory_limit(text: str, expected: int | None) -> None:
    assert cgroups.parse_memory_limit(text) == expected


@pytest.mark.parametrize(
    ("limit", "cpus", "expected"),
    [(None, 8, 8), (2.0, 64, 2), (1.5, 64, 2), (0.5, 64, 1), (16.0, 4, 4), (None, 0, 1)],
)
def test_auto_workers(limit: float | None, cpus: int, expected: int) -> None:
    assert cgroups.auto_workers(limit, cpus) == expected


def test_auto_max_memory_shares_the_limit() -> None:
    assert cgroups.auto_max_memory(None, 4) is None
    assert cgroups.auto_max_memory(1000 * 1024**2, 4) == int(1000 * 1024**2 * 0.85 / 4)


def test_config_auto_values_come_from_the_resolvers() -> None:
    config = make_config(
        {"workers": "auto", "max_memory": "auto"},
        auto_workers=lambda: 3,
        auto_memory=lambda workers: 100 * workers,
    )
    assert config.workers == 3
    assert config.max_memory == 300


def test_config_max_memory_auto_without_a_limit_means_no_ceiling() -> None:
    config = make_config({"max_memory": "auto"}, auto_memory=lambda workers: None)
    assert config.max_memory is None
