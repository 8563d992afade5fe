from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.supervisor_process import SupervisorProcess

StartSupervisor = Callable[..., SupervisorProcess]


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[StartSupervisor]:
    """Start ``python -m supervisor`` with the given args; every one is reaped at teardown."""
    started: list[SupervisorProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        rlimits: dict[int, tuple[int, int]] | None = None,
    ) -> SupervisorProcess:
        process = SupervisorProcess(tmp_path, list(args), env=env, rlimits=rlimits)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: Sequence[pytest.Item]) -> None:
    for item in items:
        if "timeout" not in item.keywords:
            item.add_marker(pytest.mark.timeout(120))
        # Tests that put load on the machine run one after another on one xdist
        # worker (--dist loadgroup): two of them at once would measure each other.
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("load"))
