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
        self._resident = memory.Resident()

    def measure(self, workers: Iterable[WorkerRecord], now: float) -> None:
        if now - self._measured < EVERY:
            return
        self._measured = now
        serving: set[int] = set()
        for worker in workers:
            if worker.state is WorkerState.STOPPED:
                continue
            if worker.state is WorkerState.SERVING:
                # A descriptor kept open for the pool's steady members only: as many as
                # the pool has workers, however fast booting and draining ones come and go.
                serving.add(worker.pid)
                measured = self._resident.of(worker.pid)
            else:
                measured = memory.rss(worker.pid)
            if measured is not None:
                worker.rss = measured
        self._resident.keep_only(serving)
