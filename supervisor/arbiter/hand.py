"""The one place that signals workers: drain (SIGTERM), fast stop (SIGQUIT), kill
(SIGKILL, after SIGABRT for a stack dump), and the state each of those puts a worker in."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.channel import send_drain
from supervisor.pool import Reason, WorkerState

logger = logging.getLogger("supervisor")

DRAIN_MARGIN = 5.0  # after --timeout-graceful, for lifespan shutdown before SIGKILL
HUNG_KILL_DELAY = 0.2  # time for faulthandler to write the stack before SIGKILL
# With a worker_abort hook: time for it too (gunicorn's SIGKILL comes a loop turn, ~1s, later).
ABORT_HOOK_DELAY = 1.0


class Hand:
    """Signals workers for the arbiter; ``graceful`` is --timeout-graceful."""

    def __init__(self, graceful: float) -> None:
        self.graceful = graceful
        self.tasks: TaskGroup | None = None  # for the SIGKILL that follows a SIGABRT
        self.has_abort_hook: Callable[[], bool] = lambda: False

    def drain(self, worker: WorkerRecord, reason: Reason, last: bool = False) -> None:
        """SIGTERM, after a Drain message saying whether anyone accepts after it."""
        if worker.state in (WorkerState.DRAINING, WorkerState.STOPPED):
            return
        self.leave(worker, reason)
        logger.info("Draining worker %d (%s)", worker.pid, reason)
        if worker.channel is not None:
            send_drain(worker.channel, last)  # read by the worker when SIGTERM arrives
        self.signal(worker, signal.SIGTERM)

    def leave(self, worker: WorkerRecord, reason: Reason) -> None:
        """The worker drains (told to, or on its own), with a deadline to be gone by."""
        if worker.state is WorkerState.STOPPED:
            return
        worker.transition(WorkerState.DRAINING)
        worker.leaving = worker.leaving or reason
        deadline = time.monotonic() + self.graceful + DRAIN_MARGIN
        worker.drain_deadline = min(worker.drain_deadline or deadline, deadline)

    def quit(self, worker: WorkerRecord) -> None:
        self.leave(worker, worker.leaving or Reason.SHUTDOWN)
        self.signal(worker, signal.SIGQUIT)

    def kill(self, worker: WorkerRecord, reason: Reason, why: str, dump: bool) -> None:
        """The one place that sends SIGKILL; each worker once (``killed``), said once."""
        if worker.state is not WorkerState.STOPPED:
            worker.transition(WorkerState.DRAINING)
        worker.leaving = worker.leaving or reason
        worker.killed = True
        if why:
            logger.error("Worker %d %s", worker.pid, why)
        if dump and self.tasks is not None:
            self.signal(worker, signal.SIGABRT)
            self.tasks.start_soon(self._kill_later, worker)
        else:
            self.signal(worker, signal.SIGKILL)

    async def _kill_later(self, worker: WorkerRecord) -> None:
        await anyio.sleep(ABORT_HOOK_DELAY if self.has_abort_hook() else HUNG_KILL_DELAY)
        if worker.state is not WorkerState.STOPPED:
            self.signal(worker, signal.SIGKILL)

    def signal(self, worker: WorkerRecord, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: SIGCHLD reaps it
            os.kill(worker.pid, sig)
