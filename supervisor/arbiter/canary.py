"""A rolling restart as a deploy: judged while it runs, rolled back when the new code is worse.

Every roll (SIGHUP, `reload`) is a :class:`Rollout`. It remembers what the
previous generation was made of (its generation number and the environment it
was forked with: an --env-file re-read on SIGHUP may have changed it), so that
after an abort the workers forked to keep capacity up are the old build again.

With --canary-seconds, the first ``--restart-batch`` new workers serve beside
the whole old generation (no old worker drains meanwhile: capacity only grows)
for the window, then :func:`canary_policy.judge` decides; passed, the roll goes
on as a plain roll; aborted, the new workers drain and the old generation keeps
serving. Without a canary, a roll whose new workers never get ready (boot
timeout, --ready-path) twice in a row is aborted the same way.

The code on disk is not the supervisor's to keep: a worker forked after an abort
imports what is on disk then (as a worker replacing a crash always did), and
the next SIGHUP tries again with it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

import msgspec

from supervisor.arbiter import actions as act_
from supervisor.arbiter import canary_policy as judge_
from supervisor.arbiter.lifecycle import Pool, WorkerRecord
from supervisor.config import Config
from supervisor.pool import Reason, WorkerState
from supervisor.system import sdnotify

logger = logging.getLogger("supervisor")

NOT_READY_ABORT = 2  # new workers in a row that never got ready: the roll aborts
_MEMORY = (Reason.MEMORY, Reason.MEMORY_TOTAL, Reason.MEMORY_HARD)


class Rollout(msgspec.Struct):
    """One rolling restart, from the signal to its end."""

    generation: int
    previous_generation: int
    previous_env: dict[str, str]
    canary: bool  # judged before it goes past its first batch
    started_at: float
    window_start: float | None = None
    baseline: dict[int, dict[str, float]] = msgspec.field(default_factory=dict)
    crashed: int = 0
    memory: int = 0
    not_ready: int = 0


class Rollouts:
    """The current roll, and how the past ones ended (``rollouts_total{result}``)."""

    def __init__(self, config: Config, pool: Pool) -> None:
        self.pool = pool
        self.limits = judge_.Limits(
            config.canary_seconds, config.canary_max_error_rate, config.canary_max_p99_ratio
        )
        self.current: Rollout | None = None
        self.results: dict[str, int] = {}
        self.last_verdict: str | None = None
        # The verdict goes to systemd too (STATUS=, `systemctl status`) under Type=notify;
        # without $NOTIFY_SOCKET this is a no-op.
        self.notifier = sdnotify.Notifier()

    # A roll starts, is held, is judged ------------------------------------------

    def begin(self, previous_env: Mapping[str, str], previous_generation: int) -> None:
        """A roll to ``pool.generation`` was asked; what came before is remembered."""
        now = time.monotonic()
        undecided = self.current
        if undecided is not None and self.holding:
            # A roll over an undecided one: the generation still serving is the older one.
            previous_env, previous_generation = (
                undecided.previous_env,
                undecided.previous_generation,
            )
        self.current = Rollout(
            generation=self.pool.generation,
            previous_generation=previous_generation,
            previous_env=dict(previous_env),
            canary=self.limits.seconds > 0,
            started_at=now,
        )
        if self.current.canary:
            logger.info(
                "Canary: the first %d new worker(s) serve beside the old generation for %gs"
                " before the roll goes on",
                self.pool.batch,
                self.limits.seconds,
            )

    @property
    def holding(self) -> bool:
        """A canary is deciding: the roll goes no further than its first batch."""
        return self.current is not None and self.current.canary

    def hold(self, decided: list[act_.Action]) -> list[act_.Action]:
        """While the canary decides: no old worker drains, no more new workers boot than
        its first batch (a lost old worker is not replaced by new code either)."""
        if not self.holding:
            return decided
        rollout = self.current
        assert rollout is not None
        # A crashed canary is not replaced by its own build: the next tick rolls back.
        room = 0 if rollout.crashed else self.pool.batch - len(self._new(live=True))
        held: list[act_.Action] = []
        for action in decided:
            if isinstance(action, act_.Drain) and action.reason is Reason.RELOAD:
                continue
            if isinstance(action, act_.Spawn):
                if room > 0:
                    held.append(act_.Spawn(min(action.workers, room)))
                continue
            held.append(action)
        return held

    def tick(self, now: float, *, stopping: bool) -> list[act_.Action]:
        """Start the canary's window, judge it, and notice a roll that has finished."""
        rollout = self.current
        if rollout is None or stopping:
            return []
        if not rollout.canary:
            return self._finished()
        serving = [w for w in self._new(live=True) if w.state is WorkerState.SERVING]
        rollout.memory = sum(
            1 for w in self._new(live=True) if w.retiring in _MEMORY or w.wants_recycle in _MEMORY
        )
        if rollout.window_start is None and len(serving) >= min(self.pool.batch, self.pool.target):
            rollout.window_start = now
            rollout.baseline = {w.pid: dict(w.stats) for w in self.pool.serving()}
        window = self._window(now)
        verdict = judge_.judge(window, self.limits)
        if verdict.outcome is judge_.Outcome.WAIT:
            return []
        line = judge_.verdict_line(
            verdict, window, (rollout.previous_generation, rollout.generation)
        )
        if verdict.outcome is judge_.Outcome.ABORTED:
            return self._abort(line)
        rollout.canary = False  # a plain roll from here on
        return [self._verdict(logging.INFO, line)]

    def on_exit(self, worker: WorkerRecord) -> list[act_.Action]:
        """A worker of the new generation is gone: a crash, or one that never got ready."""
        rollout = self.current
        if rollout is None or worker.generation != rollout.generation:
            return []
        if worker.leaving is None and worker.ever_served and rollout.canary:
            rollout.crashed += 1  # judged at the next tick, with the numbers
        elif worker.leaving is Reason.BOOT_TIMEOUT:
            rollout.not_ready += 1
            if rollout.not_ready >= NOT_READY_ABORT:
                return self._abort(
                    f"Rolling restart aborted: {rollout.not_ready} new workers in a row never"
                    f" got ready (--timeout-boot); rolling back to generation"
                    f" {rollout.previous_generation}"
                )
        elif worker.leaving is None and not worker.ever_served:
            # policy.on_exit says so and keeps the old workers; the books follow.
            self._end("aborted", restore=True)
        return []

    # Ends ------------------------------------------------------------------------

    def _verdict(self, level: int, line: str) -> act_.Log:
        self.last_verdict = line
        self.notifier.status(line, force=True)
        return act_.Log(level, line)

    def _abort(self, line: str) -> list[act_.Action]:
        rollout = self.current
        assert rollout is not None
        # Newer than what is rolled back to: this roll's workers, and those of an
        # undecided roll it was started over.
        live = [w for w in self.pool.workers.values() if w.live]
        new = [w for w in live if w.generation > rollout.previous_generation]
        keep = [w for w in live if w not in new and w.retiring is Reason.RELOAD]
        self._end("aborted", restore=True)
        return [
            self._verdict(logging.ERROR, line),
            *(act_.KeepServing(w.pid) for w in keep),
            *(act_.Drain(w.pid, Reason.ROLLBACK) for w in new),
        ]

    def _finished(self) -> list[act_.Action]:
        rollout = self.current
        assert rollout is not None
        live = [w for w in self.pool.workers.values() if w.live]
        if any(w.retiring is Reason.RELOAD or w.state is WorkerState.BOOTING for w in live):
            return []
        self._end("completed", restore=False)
        return [
            act_.Log(
                logging.INFO,
                f"Rolling restart complete: {len(live)} worker(s) on generation"
                f" {rollout.generation}",
            )
        ]

    def _end(self, result: str, *, restore: bool) -> None:
        rollout = self.current
        assert rollout is not None
        self.current = None
        self.results[result] = self.results.get(result, 0) + 1
        if restore:
            # Workers forked from now on (capacity, crashes) are the old build again.
            os.environ.clear()
            os.environ.update(rollout.previous_env)
            self.pool.generation = rollout.previous_generation

    # The window ------------------------------------------------------------------

    def _new(self, *, live: bool) -> list[WorkerRecord]:
        rollout = self.current
        if rollout is None:
            return []
        return [
            w
            for w in self.pool.workers.values()
            if w.generation == rollout.generation and (w.live or not live)
        ]

    def _window(self, now: float) -> judge_.Window:
        rollout = self.current
        assert rollout is not None
        start = rollout.window_start
        new: list[judge_.Traffic] = []
        old: list[judge_.Traffic] = []
        if start is not None:
            for worker in self.pool.serving():
                traffic = judge_.traffic_between(rollout.baseline.get(worker.pid, {}), worker.stats)
                (new if worker.generation == rollout.generation else old).append(traffic)
        return judge_.Window(
            elapsed=now - start if start is not None else 0.0,
            new=judge_.total(new),
            old=judge_.total(old),
            crashed=rollout.crashed,
            memory=rollout.memory,
        )

    def status(self) -> str | None:
        """One line for `status`: the roll under way, else the last verdict."""
        rollout = self.current
        if rollout is not None and rollout.canary:
            if rollout.window_start is None:
                return f"canary of generation {rollout.generation}: first batch booting"
            window = self._window(time.monotonic())
            return (
                f"canary of generation {rollout.generation}: {window.elapsed:.0f}s of"
                f" {self.limits.seconds:g}s, 5xx {window.new.error_share:.1%} new vs"
                f" {window.old.error_share:.1%} old, {window.new.requests:.0f} requests"
            )
        if rollout is not None:
            return f"rolling to generation {rollout.generation}"
        return self.last_verdict
