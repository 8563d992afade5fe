"""The workers' resident memory, sampled once a second."""

from __future__ import annotations

from collections.abc import Iterable

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import WorkerState
from supervisor.system import memory

EVERY = 1.0


class RssProbe:
    """``measure(workers, now)`` updates each worker's ``rss`` when a second has passed."""

    def __init__(self) -> None:
        self._measured = 0.0

    def measure(self, workers: Iterable[WorkerRecord], now: float) -> None:
        if now - self._measured < EVERY:
            return
        self._measured = now
        for worker in workers:
            if worker.state is WorkerState.STOPPED:
                continue
            measured = memory.rss(worker.pid)
            if measured is not None:
                worker.rss = measured
