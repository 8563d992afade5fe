"""Pure decisions: when to recycle, how long to back off, which workers to start or drain.

Nothing here touches a process, a socket or the clock; the arbiter passes the
facts in and acts on the answer. That keeps every rule testable in microseconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.arbiter.lifecycle import RecycleReason, WorkerRecord, WorkerState

CRASH_BACKOFF_BASE = 0.1
CRASH_BACKOFF_CAP = 10.0
# A worker that served this long before dying was healthy: its death is an
# incident to replace at once, not part of a crash loop; and a pool this long
# without a crash has recovered.
STABLE_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """Per-worker recycle points, jittered once at spawn so workers never recycle together."""

    max_requests: int = 0
    max_lifetime: float = 0.0


def worker_limits(
    max_requests: int,
    max_requests_jitter: int,
    max_lifetime: float,
    lifetime_jitter: float,
    rng: random.Random,
) -> WorkerLimits:
    requests = max_requests + rng.randint(0, max_requests_jitter) if max_requests else 0
    lifetime = max_lifetime + rng.uniform(0, lifetime_jitter) if max_lifetime else 0.0
    return WorkerLimits(requests, lifetime)


def recycle_reason(
    worker: WorkerRecord, now: float, max_memory: int | None
) -> RecycleReason | None:
    """Why a serving worker should be replaced now, or None."""
    if worker.max_requests and worker.requests >= worker.max_requests:
        return RecycleReason.MAX_REQUESTS
    if max_memory and worker.rss > max_memory:
        return RecycleReason.MEMORY
    if worker.max_lifetime and worker.age(now) >= worker.max_lifetime:
        return RecycleReason.LIFETIME
    return None


def memory_total_victim(
    workers: Sequence[WorkerRecord], max_memory_total: int | None
) -> WorkerRecord | None:
    """Over the pool's total RSS ceiling: the largest serving worker not yet retiring."""
    if not max_memory_total:
        return None
    counted = [w for w in workers if w.state is not WorkerState.STOPPED]
    if sum(w.rss for w in counted) <= max_memory_total:
        return None
    candidates = [w for w in counted if w.state is WorkerState.SERVING and not w.retire_reason]
    return max(candidates, key=lambda w: w.rss, default=None)


def is_hung(worker: WorkerRecord, now: float, timeout: float) -> bool:
    """A serving worker whose event loop has not reported for ``timeout`` seconds."""
    return worker.state is WorkerState.SERVING and now - worker.last_beat > timeout


def boot_overdue(worker: WorkerRecord, now: float, timeout: float) -> bool:
    return worker.state is WorkerState.BOOTING and worker.age(now) > timeout


def crash_streak(streak: int, last_crash: float | None, now: float) -> int:
    """Consecutive crashes; a crash after a calm period starts a new streak."""
    if last_crash is None or now - last_crash >= STABLE_AFTER:
        return 1
    return streak + 1


def in_crash_loop(served_for: float) -> bool:
    """Does this death count towards a crash-loop streak? Only a young worker's does."""
    return served_for < STABLE_AFTER


def crash_backoff(streak: int) -> float:
    """Delay before the next spawn: none for the first crash, then exponential, capped."""
    if streak <= 1:
        return 0.0
    return float(min(CRASH_BACKOFF_CAP, CRASH_BACKOFF_BASE * 2 ** (streak - 2)))


@dataclass(frozen=True, slots=True)
class Plan:
    """What the arbiter should do now: start ``spawn`` workers, drain these ones."""

    spawn: int
    drain: tuple[tuple[WorkerRecord, RecycleReason], ...]


def plan(workers: Sequence[WorkerRecord], target: int, batch: int, may_spawn: bool) -> Plan:
    """Reconcile the pool towards ``target`` serving workers without ever dropping capacity.

    - Retiring workers (recycle, reload) keep serving until a replacement
      serves: one is drained for each serving worker above the target.
    - At most ``batch`` replacements boot at once beyond the target, so a
      rolling restart replaces workers a batch at a time.
    - Workers above the target that are not retiring (scale down) drain at
      once, booting ones first.
    """
    live = [w for w in workers if w.live]
    keepers = [w for w in live if w.retire_reason is None]
    retirees = [w for w in live if w.retire_reason is not None]
    drain: list[tuple[WorkerRecord, RecycleReason]] = []

    surplus = len(keepers) - target
    if surplus > 0:
        booting_extra = sorted(
            (w for w in keepers if w.state is WorkerState.BOOTING), key=lambda w: -w.started_at
        )
        serving_oldest = sorted(
            (w for w in keepers if w.state is WorkerState.SERVING), key=lambda w: w.started_at
        )
        for worker in (booting_extra + serving_oldest)[:surplus]:
            drain.append((worker, RecycleReason.SCALE_DOWN))
        keepers = [w for w in keepers if all(w is not d for d, _ in drain)]

    serving = sum(1 for w in live if w.state is WorkerState.SERVING) - sum(
        1 for w, _ in drain if w.state is WorkerState.SERVING
    )
    excess = serving - target
    serving_retirees = sorted(
        (w for w in retirees if w.state is WorkerState.SERVING), key=lambda w: w.started_at
    )
    for worker in serving_retirees[: max(excess, 0)]:
        assert worker.retire_reason is not None
        drain.append((worker, worker.retire_reason))

    spawn = 0
    if may_spawn:
        live_after = len(live) - len(drain)
        missing = target - len(keepers)
        # Lost capacity (crash, first boot, scale up) is restored at once;
        # replacing retirees is limited to `batch` extra workers at a time.
        room = max(target - live_after, 0) + max(target + batch - max(live_after, target), 0)
        spawn = max(min(missing, room), 0)
    return Plan(spawn, tuple(drain))
