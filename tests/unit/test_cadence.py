"""The arbiter's tick: how often it runs, and a late one noticed."""

from __future__ import annotations

import math
from typing import Any

from supervisor.arbiter import cadence
from supervisor.arbiter.cadence import BUSY_TICK, STEADY_TICK, Cadence, tick_interval
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import Reason, WorkerState
from tests.unit.test_policy_reactions import worker


def tick(workers: list[WorkerRecord], target: int = 2, **given: Any) -> float:
    return tick_interval(workers, target, **{"in_motion": False, "longest": math.inf, **given})


def test_the_tick_slows_down_only_while_the_pool_is_steady() -> None:
    steady = [worker(1), worker(2)]
    assert tick(steady) == STEADY_TICK
    # Anything with a deadline keeps the busy tick: a stop, a rollout, a backoff...
    assert tick(steady, in_motion=True) == BUSY_TICK
    # ...a worker booting or draining, one to be recycled, one missing or one too many.
    assert tick([worker(1), worker(2, WorkerState.BOOTING)]) == BUSY_TICK
    assert tick([worker(1), worker(2, WorkerState.DRAINING)]) == BUSY_TICK
    assert tick([worker(1), worker(2, retiring=Reason.MAX_REQUESTS)]) == BUSY_TICK
    assert tick(steady, target=3) == BUSY_TICK
    assert tick(steady, target=1) == BUSY_TICK
    # systemd's watchdog wants its pings more often than that.
    assert tick(steady, longest=0.25) == 0.25


def test_a_tick_is_late_by_what_it_overslept() -> None:
    beat = Cadence(last=100.0, interval=STEADY_TICK)
    assert beat.lateness(101.0) == 0.0
    beat.interval = BUSY_TICK
    assert beat.lateness(101.5) == 0.0
    assert beat.lateness(112.0) == 10.0 > cadence.STALLED_AFTER  # SIGSTOPped for 10 s
    assert beat.last == 112.0
