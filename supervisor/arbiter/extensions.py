"""What hooks in beside the pool: SIGUSR2 upgrades and sd_notify (see handover.py).

The arbiter only calls these at four points: its tick (after its own
decisions: one wakeup for everything periodic, so an idle supervisor sleeps),
a stop begins, a child that is not a worker is reaped, SIGUSR2 arrives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import msgspec

from supervisor.system.exits import describe_status

logger = logging.getLogger("supervisor")


class Extensions(msgspec.Struct):
    on_tick: list[Callable[[float, bool], None]] = msgspec.field(
        default_factory=list
    )  # now, stalled
    on_stop: list[Callable[[], None]] = msgspec.field(default_factory=list)
    # A child that is not a worker exited (pid, status): True when one of these knew it.
    child_exited: list[Callable[[int, int], bool]] = msgspec.field(default_factory=list)
    upgrade: Callable[[], None] | None = None  # SIGUSR2
    longest_tick: float = math.inf  # a tick hook that must run at least this often

    def tick(self, now: float, *, stalled: bool, stopping: bool) -> None:
        """The arbiter's tick; ``stalled`` when the loop itself was late (no watchdog ping)."""
        if stopping:
            self.stopped()  # a stop the policy began (each hook acts once)
        for hook in self.on_tick:
            hook(now, stalled)

    def reaped(self, pid: int, status: int) -> None:
        """A child that is not a worker exited (an upgrade's successor, or a stranger)."""
        if not any(seen(pid, status) for seen in self.child_exited):
            logger.debug("Reaped process %d (not a worker): %s", pid, describe_status(status))

    def stopped(self) -> None:
        """A stop began (called again on later ticks: each hook acts once)."""
        for hook in self.on_stop:
            hook()
