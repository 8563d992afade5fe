"""A worker as the supervisor sees it: an explicit state machine plus its counters.

States move one way: BOOTING -> SERVING -> DRAINING -> STOPPED (a worker can
also stop from any state when it dies). Every transition goes through
:meth:`WorkerRecord.transition`, which refuses the ones that make no sense.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field
from typing import Any


class WorkerState(enum.Enum):
    BOOTING = "booting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class RecycleReason(enum.StrEnum):
    """Why a worker is being replaced; also the label of the restarts metric."""

    MAX_REQUESTS = "max-requests"
    MEMORY = "memory"
    MEMORY_TOTAL = "memory-total"
    LIFETIME = "lifetime"
    TIMEOUT = "timeout"
    CRASH = "crash"
    RELOAD = "reload"
    SCALE_DOWN = "scale-down"
    SHUTDOWN = "shutdown"


_ALLOWED = {
    WorkerState.BOOTING: {WorkerState.SERVING, WorkerState.DRAINING, WorkerState.STOPPED},
    WorkerState.SERVING: {WorkerState.DRAINING, WorkerState.STOPPED},
    WorkerState.DRAINING: {WorkerState.STOPPED},
    WorkerState.STOPPED: set(),
}


class InvalidTransition(RuntimeError):
    """A lifecycle bug: the supervisor tried to move a worker backwards."""


@dataclass(eq=False)
class WorkerRecord:
    """The supervisor's bookkeeping for one forked worker."""

    pid: int
    generation: int
    started_at: float
    channel: socket.socket | None
    max_requests: int = 0
    max_lifetime: float = 0.0
    state: WorkerState = WorkerState.BOOTING
    serving_at: float | None = None
    last_beat: float = 0.0
    requests: int = 0
    in_flight: int = 0
    connections: int = 0
    rss: int = 0
    retire_reason: RecycleReason | None = None
    drain_reason: RecycleReason | None = None
    drain_deadline: float | None = None
    kill_sent: bool = False
    boot_failure: str | None = None
    serves_error: bool = False  # --reload: answers 503 with the import error
    stats: dict[str, float] = field(default_factory=dict)
    dump_fd: int = -1  # faulthandler's pipe: the stack of a worker killed as hung
    output: Any = None  # JSON mode: capture.PipeLines over the worker's fds 1 and 2

    def transition(self, new: WorkerState) -> None:
        if new is self.state:
            return
        if new not in _ALLOWED[self.state]:
            raise InvalidTransition(
                f"worker {self.pid} cannot go from {self.state.value} to {new.value}"
            )
        self.state = new

    @property
    def live(self) -> bool:
        """Booting or serving: part of the pool the supervisor counts."""
        return self.state in (WorkerState.BOOTING, WorkerState.SERVING)

    @property
    def ever_served(self) -> bool:
        return self.serving_at is not None

    def age(self, now: float) -> float:
        return now - self.started_at
