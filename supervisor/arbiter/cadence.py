"""How often the arbiter's tick runs, and whether the supervisor itself was paused.

Twice a second while anything is in motion (the deadlines of boots, drains,
stops, backoff and rollouts are checked on the tick); once a second when the
pool is steady, where only heartbeats and memory are: an idle supervisor
barely wakes. A steady pool's heartbeats are read on that tick too
(:func:`supervisor.arbiter.channels.settle`), so it wakes once a second
whatever the number of workers; news that cannot wait (a worker at
--max-requests, one asking to be recycled) comes with a SIGCHLD nudge. Signals and exits do
not wait for the tick, nor does any message while something is in motion.
A tick that comes much later than it was due means the supervisor itself
was not running (SIGSTOP, a frozen VM).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import WorkerState

logger = logging.getLogger("supervisor")

BUSY_TICK = 0.5
STEADY_TICK = 1.0
STALLED_AFTER = 2.0  # a tick this late: the supervisor itself was not running


def tick_interval(
    workers: Sequence[WorkerRecord], target: int, *, in_motion: bool, longest: float
) -> float:
    """Seconds until the next tick: ``in_motion`` covers what the pool does not show
    (a stop, a rollout, a backoff); ``longest`` is a cap from outside (systemd's watchdog)."""
    steady = (
        not in_motion
        and len(workers) == target
        and all(w.state is WorkerState.SERVING and w.retiring is None for w in workers)
    )
    return min(STEADY_TICK if steady else BUSY_TICK, longest)


class Cadence(msgspec.Struct):
    """When the last tick ran and how long the loop meant to sleep after it."""

    last: float = 0.0
    interval: float = BUSY_TICK

    def lateness(self, now: float) -> float:
        """Seconds this tick came later than due; it becomes the last one."""
        late = now - self.last - self.interval
        self.last = now
        return late

    def paused_for(self, now: float) -> float | None:
        """How long the supervisor itself was not running, when this tick says it was."""
        late = self.lateness(now)
        if late <= STALLED_AFTER:
            return None
        logger.warning(
            "The supervisor was paused for %.1fs (SIGSTOP, a frozen VM?); liveness checks"
            " start again from now",
            late,
        )
        return late
