"""What the supervisor tells systemd (``Type=notify``), read off the pool on each tick.

READY=1 once the first workers serve; RELOADING=1 when a roll begins and
READY=1 again when every worker is of the new generation; STOPPING=1 when
the drain begins; a STATUS= line with the counts; WATCHDOG=1 pings while
the loop runs on time and at least one worker serves. During a USR2 upgrade
the old supervisor says MAINPID= for the new one (see
:mod:`supervisor.arbiter.upgrade`) and is silent from then on. Without
$NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import math

import msgspec

from supervisor.arbiter.lifecycle import Pool
from supervisor.arbiter.upgrade import BOOT_MARGIN
from supervisor.pool import WorkerState
from supervisor.system.sdnotify import Notifier, status_text


class Phase(msgspec.Struct, frozen=True):
    """What the pool is doing, as systemd's state machine sees it."""

    served: bool
    rolling: bool
    stopping: bool


def phase_of(pool: Pool, *, stopping: bool) -> Phase:
    live = [w for w in pool.workers.values() if w.live]
    # A roll (SIGHUP, `reload`) bumps the generation: it lasts while an older one lives.
    rolling = any(w.generation < pool.generation for w in live)
    return Phase(served=pool.served, rolling=rolling, stopping=stopping)


def status_of(pool: Pool, phase: Phase, *, upgrading: bool = False) -> str:
    live = [w for w in pool.workers.values() if w.live]
    serving = sum(1 for w in live if w.state is WorkerState.SERVING and w.retiring is None)
    booting = sum(1 for w in live if w.state is WorkerState.BOOTING)
    draining = sum(1 for w in pool.workers.values() if w.state is WorkerState.DRAINING)
    words = (
        "draining"
        if phase.stopping
        else "upgrading"
        if upgrading
        else "rolling restart"
        if phase.rolling
        else ""
    )
    return status_text(
        serving=serving,
        workers=pool.target,
        generation=pool.generation,
        requests=sum(w.requests for w in live),
        booting=booting,
        draining=draining,
        phase=words,
    )


class SystemdLink:
    """Turns each tick's :class:`Phase` into the sd_notify messages that changed."""

    def __init__(
        self, notifier: Notifier | None = None, *, successor: bool = False, budget: float = 0.0
    ) -> None:
        self.notifier = notifier or Notifier()
        # How long one batch of a roll may take (boot + drain): systemd's reload
        # deadline (TimeoutStartSec) is moved that far each time a batch starts.
        self.budget = budget
        self._booting: set[int] = set()
        # A USR2 successor: systemd ignores it until the old one says MAINPID= (and
        # READY=1) for it, so it keeps quiet until then.
        self.ready_sent = successor
        self.silent = successor  # also once handed over: the successor is the main pid
        self.reloading = False
        self.stopping = False
        self.upgrading = False
        self._pinged_at = -math.inf
        self._generation = 1

    def tick(self, pool: Pool, *, stopping: bool, healthy: bool, now: float) -> None:
        if self.silent or not self.notifier.enabled:
            return
        phase = phase_of(pool, stopping=stopping)
        text = status_of(pool, phase, upgrading=self.upgrading)
        if phase.stopping:
            if not self.stopping:
                self.stopping = True
                self.notifier.stopping(text)
            self.notifier.status(text)
            return
        if not self.ready_sent and phase.served:
            self.ready_sent = True
            self.notifier.ready(text)
        # A new generation is a roll, even one that ended between two ticks.
        rolled = pool.generation != self._generation
        self._generation = pool.generation
        if self.ready_sent and (rolled or phase.rolling) and not self.reloading:
            self.reloading = True
            self.notifier.reloading(text)
            self.notifier.extend_timeout(self.budget)  # the first batch
            self._booting = set()
        if self.reloading:
            self._extend(pool)
        if self.reloading and not phase.rolling:
            self.reloading = False
            self.notifier.ready(text)
        self.notifier.status(text)
        self._ping(pool, healthy=healthy, now=now)

    def _extend(self, pool: Pool) -> None:
        booting = {
            w.pid
            for w in pool.workers.values()
            if w.state is WorkerState.BOOTING and w.generation == pool.generation
        }
        # The first batch was covered when RELOADING=1 went out; each later one here.
        if booting - self._booting and self._booting:
            self.notifier.extend_timeout(self.budget)
        self._booting |= booting

    def upgrade_started(self, pool: Pool) -> None:
        """SIGUSR2: systemd shows "reloading" until MAINPID= and READY=1 (or a failure)."""
        self.upgrading = True
        if not self.silent and self.notifier.enabled:
            self.notifier.reloading(status_of(pool, phase_of(pool, stopping=False), upgrading=True))
            self.notifier.extend_timeout(self.budget + BOOT_MARGIN)

    def upgrade_failed(self, pool: Pool, reason: str) -> None:
        """The old supervisor keeps serving: READY=1 again, the reason in STATUS=."""
        self.upgrading = False
        if not self.silent and self.notifier.enabled:
            text = status_of(pool, phase_of(pool, stopping=False))
            self.notifier.ready(f"upgrade failed ({reason}); {text}")

    def stopped(self, pool: Pool) -> None:
        """The drain begins (a stop can end before the next tick)."""
        if self.silent or self.stopping or not self.notifier.enabled:
            return
        self.stopping = True
        self.notifier.stopping(status_of(pool, phase_of(pool, stopping=True)))

    def _ping(self, pool: Pool, *, healthy: bool, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or not healthy or not pool.serving():
            return
        if now - self._pinged_at >= interval:
            self._pinged_at = now
            self.notifier.watchdog()

    def hand_over(self, new_pid: int, status: str) -> None:
        """The successor serves: make it systemd's main pid (only we may say so), then hush."""
        if self.notifier.enabled and not self.silent:
            self.notifier.notify(f"MAINPID={new_pid}", "READY=1", f"STATUS={status}")
        self.silent = True
