"""The workers' resident memory, sampled once a second (psutil, off the start-up path)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import WorkerState

if TYPE_CHECKING:
    import psutil

EVERY = 1.0


class RssProbe:
    """``measure(workers, now)`` updates each worker's ``rss`` when a second has passed."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._measured = 0.0

    def measure(self, workers: Iterable[WorkerRecord], now: float) -> None:
        if now - self._measured < EVERY:
            return
        self._measured = now
        import psutil  # noqa: PLC0415 - after the first fork, off the start-up path

        for worker in workers:
            if worker.state is WorkerState.STOPPED:
                continue
            try:
                process = self._processes.get(worker.pid)
                if process is None:
                    process = self._processes[worker.pid] = psutil.Process(worker.pid)
                worker.rss = process.memory_info().rss
            except psutil.Error:
                continue

    def forget(self, pid: int) -> None:
        self._processes.pop(pid, None)
