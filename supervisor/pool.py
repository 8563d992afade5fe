"""The pool's vocabulary, and the snapshot every reader of the pool gets.

The arbiter keeps mutable records of its workers; control, metrics, hooks
and status never see them. They get a :class:`PoolSnapshot`: a typed,
immutable value the arbiter builds on request, so a reader can neither
change the pool nor depend on how the arbiter stores it.
"""

from __future__ import annotations

import enum

import msgspec


class WorkerState(enum.Enum):
    """Where a worker is in its life; it moves one way (see arbiter.lifecycle)."""

    BOOTING = "booting"  # forked; importing the app, running lifespan startup
    SERVING = "serving"  # accepting requests
    DRAINING = "draining"  # told to leave (or leaving on its own): finishing what it has
    STOPPED = "stopped"  # reaped


class Reason(enum.StrEnum):
    """Why a worker leaves the pool; also the label of the restarts metric."""

    MAX_REQUESTS = "max-requests"
    MEMORY = "memory"  # --max-memory (sampled RSS)
    MEMORY_TOTAL = "memory-total"
    MEMORY_HARD = "memory-hard"  # an allocation failed at --max-memory-hard
    LIFETIME = "lifetime"
    FD_LIMIT = "fd-limit"  # near its open-file limit it stopped accepting
    TIMEOUT = "timeout"  # its event loop stopped reporting (--timeout-worker)
    BOOT_TIMEOUT = "boot-timeout"  # not serving within --timeout-boot
    BOOT_FAILURE = "boot-failure"  # its app did not load or start
    CRASH = "crash"  # died while serving
    EXITED = "exited"  # exited on its own, with code 0, while it should serve
    LEFT = "left"  # started draining on its own (a SIGTERM sent to it directly)
    RELOAD = "reload"  # rolling restart (SIGHUP, --reload, `reload`)
    SCALE_DOWN = "scale-down"
    SHUTDOWN = "shutdown"


class StopMode(enum.Enum):
    """Whether and how the supervisor is stopping."""

    RUNNING = "running"
    GRACEFUL = "graceful"  # SIGTERM, SIGINT, `stop`: drain up to --timeout-graceful
    FAST = "fast"  # SIGQUIT, a second SIGINT, `stop --fast`: a few seconds


class WorkerView(msgspec.Struct, frozen=True):
    """One worker as readers see it."""

    pid: int
    generation: int
    state: WorkerState
    age_s: float
    requests: int
    in_flight: int
    connections: int
    rss_bytes: int
    last_beat_s: float
    retiring: Reason | None  # marked for replacement, still serving until one serves
    leaving: Reason | None  # why it drains or drained
    stats: dict[str, float]
    websockets: int = 0  # open now (they count in in_flight too)
    streams: int = 0  # HTTP responses started and not ended


class PoolSnapshot(msgspec.Struct, frozen=True):
    """The pool at one moment: what status, metrics and hooks read."""

    pid: int
    version: str
    app: str
    instance_id: str
    uptime_s: float
    target: int
    generation: int
    stopping: StopMode
    workers: tuple[WorkerView, ...]  # oldest first
    restarts: dict[str, int]  # Reason value -> count
    exited_requests: int  # requests served by workers that are gone
    exited_stats: dict[str, float]  # their final counters
    boot_failing: str | None = None  # the last boot failure while none could start

    @property
    def live(self) -> tuple[WorkerView, ...]:
        return tuple(
            w for w in self.workers if w.state in (WorkerState.BOOTING, WorkerState.SERVING)
        )

    @property
    def serving(self) -> int:
        return sum(w.state is WorkerState.SERVING for w in self.workers)

    def total_requests(self) -> int:
        """Every request answered since start, by live and exited workers."""
        return self.exited_requests + sum(w.requests for w in self.workers)

    def pooled_stats(self) -> dict[str, float]:
        """Feature counters summed over exited and live workers."""
        totals = dict(self.exited_stats)
        for worker in self.workers:
            for key, value in worker.stats.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals
