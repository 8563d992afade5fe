"""Pure decisions: every situation in, a list of actions out.

Nothing here touches a process, a socket or the clock; the arbiter passes the
facts in and carries the answer out (:mod:`supervisor.arbiter.actions`).
That keeps every rule testable in microseconds, without fork.

    plan        the pool against its target: spawn, drain retirees and surplus
    check       the periodic checks: hung loops, boot and drain deadlines, recycles
    on_exit     a worker is gone: count it, back off, abort a roll, or stop
    stop_step   while stopping: kill what outlives the deadline, finish when empty
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import msgspec

from supervisor.arbiter.actions import (
    Action,
    BeginStop,
    BootFailing,
    Count,
    Drain,
    ExitCode,
    Failed,
    Finish,
    KeepServing,
    Kill,
    Log,
    Retire,
    Spawn,
)
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.config import format_size
from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_ERROR, EXIT_OK, EXIT_WORKER_BOOT_ERROR
from supervisor.pool import Reason, WorkerState

CRASH_BACKOFF_BASE = 0.1
CRASH_BACKOFF_CAP = 10.0
# A worker that served this long before dying was healthy: its death is an
# incident to replace at once, not part of a crash loop; and a pool this long
# without a crash has recovered.
STABLE_AFTER = 2.0
# Deaths the operator asked for or the supervisor caused: not a failure of the app.
_EXPECTED = frozenset(
    {Reason.RELOAD, Reason.SCALE_DOWN, Reason.SHUTDOWN, Reason.MAX_REQUESTS, Reason.LIFETIME}
)


class WorkerLimits(msgspec.Struct, frozen=True):
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


# Recycling ------------------------------------------------------------------------


def recycle_reason(worker: WorkerRecord, now: float, max_memory: int | None) -> Reason | None:
    """Why a serving worker should be replaced now, or None."""
    if worker.max_requests and worker.requests >= worker.max_requests:
        return Reason.MAX_REQUESTS
    if max_memory and worker.rss > max_memory:
        return Reason.MEMORY
    if worker.max_lifetime and worker.age(now) >= worker.max_lifetime:
        return Reason.LIFETIME
    return worker.wants_recycle  # it asked: near its fd limit, or an allocation failed


def recycle_detail(worker: WorkerRecord, reason: Reason, now: float, limits: Checks) -> str:
    """The numbers behind a recycle, for its log line."""
    if reason is Reason.MAX_REQUESTS:
        return f"{worker.requests} requests, limit {worker.max_requests}"
    if reason is Reason.MEMORY:
        return f"RSS {format_size(worker.rss)}, limit {format_size(limits.max_memory or 0)}"
    if reason is Reason.MEMORY_TOTAL:
        total = format_size(limits.max_memory_total or 0)
        return f"largest worker at RSS {format_size(worker.rss)}, total limit {total}"
    if reason is Reason.LIFETIME:
        return f"age {worker.age(now):.0f}s, limit {worker.max_lifetime:.0f}s"
    if reason is Reason.FD_LIMIT:
        return "it stopped accepting near its open-file limit"
    if reason is Reason.MEMORY_HARD:
        return "an allocation failed at --max-memory-hard"
    return ""


def memory_total_victim(
    workers: Sequence[WorkerRecord], max_memory_total: int | None
) -> WorkerRecord | None:
    """Over the pool's total RSS ceiling: the largest serving worker not yet retiring."""
    if not max_memory_total:
        return None
    counted = [w for w in workers if w.state is not WorkerState.STOPPED]
    if sum(w.rss for w in counted) <= max_memory_total:
        return None
    candidates = [w for w in counted if w.state is WorkerState.SERVING and not w.retiring]
    return max(candidates, key=lambda w: w.rss, default=None)


# Liveness ---------------------------------------------------------------------------


def is_hung(worker: WorkerRecord, now: float, timeout: float) -> bool:
    """A serving or draining worker whose event loop has not reported for ``timeout``
    seconds (a draining worker keeps reporting: a hung drain is caught too)."""
    alive = worker.state in (WorkerState.SERVING, WorkerState.DRAINING)
    return alive and not worker.killed and now - worker.last_beat > timeout


def boot_overdue(worker: WorkerRecord, now: float, timeout: float) -> bool:
    return worker.state is WorkerState.BOOTING and worker.age(now) > timeout


class Checks(msgspec.Struct, frozen=True):
    """The limits the periodic checks apply."""

    timeout_worker: float
    timeout_boot: float
    max_memory: int | None = None
    max_memory_total: int | None = None


def check(
    workers: Sequence[WorkerRecord], now: float, limits: Checks, *, stalled: bool = False
) -> list[Action]:
    """The periodic checks. ``stalled``: the supervisor itself was not running (paused,
    SIGSTOP, a VM freeze): silence measured across it is not the workers' fault."""
    actions: list[Action] = []
    for worker in workers:
        if worker.killed or worker.state is WorkerState.STOPPED:
            continue
        if not stalled and is_hung(worker, now, limits.timeout_worker):
            why = (
                f"is hung: its event loop has not reported for {now - worker.last_beat:.1f}s"
                f" (--timeout-worker {limits.timeout_worker:g}); dumping its stack and killing it"
            )
            actions.append(Kill(worker.pid, Reason.TIMEOUT, why, dump=True))
        elif not stalled and boot_overdue(worker, now, limits.timeout_boot):
            why = (
                f"did not start serving within {limits.timeout_boot:g}s (--timeout-boot);"
                " killing it"
            )
            actions.append(Kill(worker.pid, Reason.BOOT_TIMEOUT, why))
        elif worker.drain_deadline is not None and now > worker.drain_deadline:
            why = (
                f"still draining after its deadline; killed with {worker.in_flight} request(s)"
                " in flight"
            )
            actions.append(Kill(worker.pid, worker.leaving or Reason.SHUTDOWN, why))
        else:
            actions += recycles([worker], now, limits)
    victim = memory_total_victim(workers, limits.max_memory_total)
    if victim is not None and not any(
        isinstance(a, Retire) and a.pid == victim.pid for a in actions
    ):
        detail = recycle_detail(victim, Reason.MEMORY_TOTAL, now, limits)
        actions.append(Retire(victim.pid, Reason.MEMORY_TOTAL, detail))
    return actions


def recycles(workers: Sequence[WorkerRecord], now: float, limits: Checks) -> list[Action]:
    """Serving workers that passed a recycle point (also checked on each heartbeat, so a
    worker at --max-requests is replaced at once, not at the next tick)."""
    actions: list[Action] = []
    for worker in workers:
        if worker.state is not WorkerState.SERVING or worker.retiring is not None:
            continue
        reason = recycle_reason(worker, now, limits.max_memory)
        if reason is not None:
            detail = recycle_detail(worker, reason, now, limits)
            actions.append(Retire(worker.pid, reason, detail))
    return actions


# Backoff ------------------------------------------------------------------------------


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


# The pool against its target ------------------------------------------------------------


class Plan(msgspec.Struct, frozen=True):
    """What the pool needs now: start ``spawn`` workers, drain these ones."""

    spawn: int
    drain: tuple[tuple[WorkerRecord, Reason], ...]


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
    keepers = [w for w in live if w.retiring is None]
    retirees = [w for w in live if w.retiring is not None]
    drain: list[tuple[WorkerRecord, Reason]] = []

    surplus = len(keepers) - target
    if surplus > 0:
        booting_extra = sorted(
            (w for w in keepers if w.state is WorkerState.BOOTING), key=lambda w: -w.started_at
        )
        serving_oldest = sorted(
            (w for w in keepers if w.state is WorkerState.SERVING), key=lambda w: w.started_at
        )
        for worker in (booting_extra + serving_oldest)[:surplus]:
            drain.append((worker, Reason.SCALE_DOWN))
        keepers = [w for w in keepers if all(w is not d for d, _ in drain)]

    serving = sum(1 for w in live if w.state is WorkerState.SERVING) - sum(
        1 for w, _ in drain if w.state is WorkerState.SERVING
    )
    excess = serving - target
    serving_retirees = sorted(
        (w for w in retirees if w.state is WorkerState.SERVING), key=lambda w: w.started_at
    )
    for worker in serving_retirees[: max(excess, 0)]:
        assert worker.retiring is not None
        drain.append((worker, worker.retiring))

    spawn = 0
    if may_spawn:
        live_after = len(live) - len(drain)
        missing = target - len(keepers)
        # Lost capacity (crash, first boot, scale up) is restored at once;
        # replacing retirees is limited to `batch` extra workers at a time.
        room = max(target - live_after, 0) + max(target + batch - max(live_after, target), 0)
        spawn = max(min(missing, room), 0)
    return Plan(spawn, tuple(drain))


def pool_actions(
    workers: Sequence[WorkerRecord], target: int, batch: int, may_spawn: bool
) -> list[Action]:
    """:func:`plan` as actions: drains first (their replacements already serve), then spawns."""
    decided = plan(workers, target, batch, may_spawn)
    actions: list[Action] = [Drain(w.pid, reason) for w, reason in decided.drain]
    if decided.spawn:
        actions.append(Spawn(decided.spawn))
    return actions


# A worker is gone ------------------------------------------------------------------------


class Ended(msgspec.Struct, frozen=True):
    """How a worker ended, decoded by the arbiter from its wait status."""

    code: int  # exit code, or -N when signal N killed it
    how: str  # "exited with code 3 (worker boot failure)", "killed by SIGKILL (...)"


class Situation(msgspec.Struct, frozen=True):
    """The pool around a worker's exit."""

    now: float
    stopping: bool
    reload_mode: bool  # --reload: a bad save must never take the port down
    others_serving: bool
    pool_served: bool  # some worker has served since the supervisor started
    already_shown: bool  # this boot failure's message was logged before
    rolling: tuple[int, ...] = ()  # workers retiring for a rolling restart


def on_exit(worker: WorkerRecord, ended: Ended, situation: Situation) -> list[Action]:
    """A worker was reaped: what it means and what to do about it."""
    if worker.leaving is not None:
        return _left(worker, ended, situation)
    if situation.stopping:
        return [Log(logging.INFO, f"Worker {worker.pid} {ended.how}")]
    if not worker.ever_served:
        return _boot_failed(worker, ended, situation)
    assert worker.serving_at is not None
    young = in_crash_loop(situation.now - worker.serving_at)
    if ended.code == EXIT_OK:
        # It stopped on its own (os._exit(0), a library calling sys.exit) while it
        # should serve: replaced, and counted towards a crash loop like a crash.
        message = f"Worker {worker.pid} exited on its own ({ended.how}) while serving; replacing it"
        actions: list[Action] = [Count(Reason.EXITED), Log(logging.WARNING, message)]
    else:
        message = f"Worker {worker.pid} died: {ended.how}; replacing it"
        actions = [Count(Reason.CRASH), Log(logging.ERROR, message)]
    if young:
        actions.append(Failed())
    return actions


def _left(worker: WorkerRecord, ended: Ended, situation: Situation) -> list[Action]:
    reason = worker.leaving
    assert reason is not None
    level = logging.INFO if reason in _EXPECTED or reason is Reason.LEFT else logging.WARNING
    ws = f", {worker.websocket_sessions} websockets" if worker.websocket_sessions else ""
    message = f"Worker {worker.pid} stopped ({reason}, {ended.how}, {worker.requests} requests{ws})"
    actions: list[Action] = [Count(reason), Log(level, message)]
    if situation.stopping and ended.code != EXIT_OK:
        actions.append(ExitCode(EXIT_ERROR))  # the drain cut requests, or it was killed
    return actions


def _boot_failed(worker: WorkerRecord, ended: Ended, situation: Situation) -> list[Action]:
    message = worker.boot_failure or f"Worker {worker.pid} {ended.how} while booting."
    actions: list[Action] = []
    if not situation.already_shown:
        actions.append(Log(logging.ERROR, f"Worker {worker.pid} failed to boot: {message}"))
    if situation.reload_mode:
        return [*actions, BootFailing(message)]
    if not situation.others_serving and not situation.pool_served:
        # It never booted since start: respawning would only loop. Gunicorn's codes.
        code = EXIT_APP_LOAD_ERROR if ended.code == EXIT_APP_LOAD_ERROR else EXIT_WORKER_BOOT_ERROR
        note = f"Workers fail before serving; stopping instead of respawning (exit code {code})"
        return [*actions, Log(logging.ERROR, note), BeginStop(fast=True, code=code)]
    actions += [Count(Reason.BOOT_FAILURE), Failed()]
    if situation.rolling:
        actions += [KeepServing(pid) for pid in situation.rolling]
        note = "Rolling restart aborted: new workers fail to boot; old workers keep serving"
        actions.append(Log(logging.ERROR, note))
    if not situation.others_serving:
        # It served before (a backend down at respawn time): a transient outage is
        # retried with backoff, not turned into a stopped service.
        note = "No worker is serving: new workers fail to boot; retrying with backoff"
        actions += [Log(logging.ERROR, note), BootFailing(message)]
    return actions


# Stopping -------------------------------------------------------------------------------


class StopState(msgspec.Struct, frozen=True):
    """Whether the supervisor is stopping, how, and until when it waits."""

    fast: bool
    deadline: float


def stop_step(workers: Sequence[WorkerRecord], stop: StopState, now: float) -> list[Action]:
    """While stopping: finish when every worker is gone; after the deadline, kill the rest."""
    left = [w for w in workers if w.state is not WorkerState.STOPPED]
    if not left:
        return [Finish()]
    if now <= stop.deadline:
        return []
    unkilled = [w for w in left if not w.killed]
    if not unkilled:
        return []
    abandoned = sum(w.in_flight for w in unkilled)
    return [
        Log(
            logging.ERROR,
            f"{len(unkilled)} worker(s) did not stop in time; killing them"
            f" ({abandoned} request(s) abandoned)",
        ),
        ExitCode(EXIT_ERROR),
        *(Kill(w.pid, w.leaving or Reason.SHUTDOWN, "") for w in unkilled),
    ]
