"""A worker as the supervisor keeps it: an explicit state machine plus what it reported.

States move one way: BOOTING -> SERVING -> DRAINING -> STOPPED (a worker can
also stop from any state when it dies). Every transition goes through
:meth:`WorkerRecord.transition`, which refuses the ones that make no sense.

Two reasons, two moments: ``retiring`` marks a serving worker for
replacement (a recycle, a roll): it keeps serving until a replacement
serves, so capacity never drops. ``leaving`` is set when it starts to drain
(or dies): why it is going, counted in ``restarts{reason}`` when it is gone.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import msgspec

from supervisor.channel import Heartbeat
from supervisor.pool import Reason, WorkerState, WorkerView

_ALLOWED = {
    WorkerState.BOOTING: {WorkerState.SERVING, WorkerState.DRAINING, WorkerState.STOPPED},
    WorkerState.SERVING: {WorkerState.DRAINING, WorkerState.STOPPED},
    WorkerState.DRAINING: {WorkerState.STOPPED},
    WorkerState.STOPPED: set(),
}


class InvalidTransition(RuntimeError):
    """A lifecycle bug: the supervisor tried to move a worker backwards."""


class WorkerRecord(msgspec.Struct, eq=False):
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
    websockets: int = 0
    streams: int = 0
    websocket_sessions: int = 0
    rss: int = 0
    retiring: Reason | None = None
    leaving: Reason | None = None
    drain_deadline: float | None = None
    killed: bool = False  # SIGKILL sent: never again, never logged again
    boot_failure: str | None = None
    wants_recycle: Reason | None = None  # the worker asked (fd limit, memory-hard)
    serves_error: bool = False  # --reload: answers 503 with the import error
    stats: dict[str, float] = msgspec.field(default_factory=dict)
    dump_fd: int = -1  # faulthandler's pipe: the stack of a worker killed as hung
    output: Any = None  # JSON mode: capture.PipeLines over the worker's fds 1 and 2
    parked: bool = False  # a steady pool: its channel is read on the tick (channels.settle)

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

    def heard(self, beat: Heartbeat) -> None:
        """What a heartbeat reports: the counts, the stats, a recycle the worker wants."""
        self.requests, self.in_flight, self.connections = (
            beat.requests,
            beat.in_flight,
            beat.connections,
        )
        self.websockets, self.streams = beat.websockets, beat.streams
        self.websocket_sessions = beat.websocket_sessions
        self.stats = beat.stats if beat.stats is not None else self.stats
        if beat.recycle and self.wants_recycle is None:
            self.wants_recycle = Reason(beat.recycle)

    def view(self, now: float) -> WorkerView:
        return WorkerView(
            pid=self.pid,
            generation=self.generation,
            state=self.state,
            age_s=round(self.age(now), 3),
            requests=self.requests,
            in_flight=self.in_flight,
            connections=self.connections,
            websockets=self.websockets,
            streams=self.streams,
            rss_bytes=self.rss,
            last_beat_s=round(now - self.last_beat, 3),
            retiring=self.retiring,
            leaving=self.leaving,
            stats=dict(self.stats),
        )


class Pool(msgspec.Struct):
    """The workers and what they are reconciled towards."""

    target: int
    batch: int
    generation: int = 1
    served: bool = False  # some worker has served since start
    started_at: float = msgspec.field(default_factory=time.monotonic)
    workers: dict[int, WorkerRecord] = msgspec.field(default_factory=dict)

    def serving(self) -> list[WorkerRecord]:
        return [w for w in self.workers.values() if w.state is WorkerState.SERVING]

    def roll(self) -> int:
        """Mark every live worker for a rolling restart; how many."""
        self.generation += 1
        live = [w for w in self.workers.values() if w.live]
        for worker in live:
            worker.retiring = Reason.RELOAD
        return len(live)

    def rebaseline(self, now: float, late: float) -> None:
        """The supervisor was not running for ``late`` seconds: the workers' silence over
        that time says nothing about them; every check starts again from now."""
        for worker in self.workers.values():
            worker.last_beat = now
            if worker.state is WorkerState.BOOTING:
                worker.started_at += late
            if worker.drain_deadline is not None:
                worker.drain_deadline += late
