"""The supervisor's event loop, as a story: spawn, watch, decide, act.

Events come from a few sources: signals (one task turns them into calls,
see :mod:`supervisor.arbiter.signals`), each worker's channel, a tick (twice
a second while anything is in motion, once a second when the pool is
steady), the --reload watcher and the control socket. Each updates the
workers' records, asks :mod:`supervisor.arbiter.policy` what it means, and
hands the answer to :meth:`Arbiter.act`, the one place where workers are
forked, signalled and killed. Nothing blocks: forks and kills are syscalls,
waits are deadlines checked on the tick.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from supervisor import logs
from supervisor._version import __version__
from supervisor.arbiter import actions as act_
from supervisor.arbiter import channels, outputs, policy
from supervisor.arbiter import signals as signals_
from supervisor.arbiter.books import Backoff, Books
from supervisor.arbiter.boots import BootWatch
from supervisor.arbiter.cadence import BUSY_TICK, Cadence, tick_interval
from supervisor.arbiter.canary import Rollouts
from supervisor.arbiter.extensions import Extensions
from supervisor.arbiter.hand import DRAIN_MARGIN, Hand
from supervisor.arbiter.hooks import Hooks, ServerHandle
from supervisor.arbiter.lifecycle import Pool, WorkerRecord
from supervisor.arbiter.probe import RssProbe
from supervisor.arbiter.spawn import Spawner, SpawnError
from supervisor.channel import BootFailure, Heartbeat, Message, Ready
from supervisor.config import Config
from supervisor.pool import PoolSnapshot, Reason, StopMode, WorkerState
from supervisor.system import titles
from supervisor.system.exits import describe_status, exit_code, reap_children

if TYPE_CHECKING:
    from supervisor.appmetrics.harvest import Harvest
    from supervisor.appmetrics.pooling import Family

logger = logging.getLogger("supervisor")

FAST_STOP_SECONDS = 3.0


class Runtime(msgspec.Struct):
    """The event loop's handles, made in :meth:`Arbiter.run`."""

    tasks: TaskGroup | None = None
    done: anyio.Event | None = None
    cadence: Cadence = msgspec.field(default_factory=Cadence)
    extensions: Extensions = msgspec.field(default_factory=Extensions)  # SIGUSR2, sd_notify


class Arbiter:
    """Keeps ``target`` workers serving on the shared listeners until told to stop."""

    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        *,
        preloaded_app: Any | None = None,
        hooks: Hooks | None = None,
        server: ServerHandle | None = None,
        on_hup: Any | None = None,
    ) -> None:
        self.config = config
        self.pool = Pool(target=config.workers, batch=config.restart_batch)
        self.rollouts = Rollouts(config, self.pool)
        self.books = Books()
        self.backoff = Backoff()
        self.boots = BootWatch(preloaded_app)
        self.hooks = hooks or Hooks()
        self.server = server or ServerHandle(config)
        self.server._snapshot = self.snapshot
        self.probe = RssProbe()
        self.hand = Hand(config.timeout_graceful)
        self.hand.has_abort_hook = lambda: self.hooks.get("worker_abort") is not None
        self.stop_state: policy.StopState | None = None
        self.on_hup = on_hup
        self.spawner = Spawner(
            config,
            listeners,
            json_logs=logs.state.json,
            hooks=self.hooks,
            server=self.server,
            app=self.boots.app,
            # The app's prometheus_client metrics, when the supervisor serves metrics at all.
            harvest=_harvest(config),
        )
        self.loop = Runtime()

    # The story ---------------------------------------------------------------

    def start(self) -> None:
        """Fork the first workers before the loop exists: they boot while it is set up."""
        signals_.remember_until_the_loop_listens()
        self.spawner.warm_up()
        self.hooks.call("when_ready", self.server)  # gunicorn's: listeners up, before forking
        for _ in range(self.pool.target):
            if signals_.stop_pending():
                logger.info("Stop requested while starting: no more workers forked")
                return
            if not self._spawn_one():
                return

    async def run(self, *sources: Any) -> int:
        """Serve until stopped; ``sources`` are more tasks (control socket, metrics...)."""
        done = self.loop.done = anyio.Event()
        self.loop.cadence.last = time.monotonic()  # a stall before the first tick counts too
        async with anyio.create_task_group() as tg:
            self.loop.tasks = self.hand.tasks = tg
            for worker in list(self.pool.workers.values()):
                self._start_readers(worker)
            tg.start_soon(self._tick)
            for source in sources:
                tg.start_soon(source)
            if not signals_.stop_pending():  # else the signal watcher stops first
                self.reconcile()
            await done.wait()
            tg.cancel_scope.cancel()
        return self.books.exit_code

    def reconcile(self) -> None:
        """Decide what the pool needs now and act on it."""
        now = time.monotonic()
        workers = list(self.pool.workers.values())
        if self.stop_state is not None:
            self.act(policy.stop_step(workers, self.stop_state, now))
            return
        pool = self.pool
        decided = policy.pool_actions(workers, pool.target, pool.batch, self.backoff.allows(now))
        self.act(self.rollouts.hold(decided))

    def act(self, decided: list[act_.Action]) -> None:
        """Carry out what the policy decided; the one place that signals workers."""
        for action in decided:
            worker = self.pool.workers.get(getattr(action, "pid", -1))
            match action:
                case act_.Spawn(workers):
                    for _ in range(workers):
                        if not self._spawn_one():
                            break
                case act_.Retire(_, reason, detail) if worker is not None:
                    worker.retiring = reason
                    logger.info("Recycling worker %d (%s: %s)", worker.pid, reason, detail)
                case act_.KeepServing() if worker is not None:
                    worker.retiring = None
                case act_.Drain(_, reason, last) if worker is not None:
                    self.hand.drain(worker, reason, last)
                case act_.Leave(_, reason) if worker is not None:
                    logger.warning(
                        "Worker %d is draining on its own (a SIGTERM sent to it?); replacing it",
                        worker.pid,
                    )
                    self.hand.leave(worker, reason)
                case act_.Quit() if worker is not None:
                    self.hand.quit(worker)
                case act_.Kill(_, reason, why, dump) if worker is not None and not worker.killed:
                    self.hand.kill(worker, reason, why, dump)
                case act_.Count(reason):
                    self.books.count(reason)
                case act_.Failed():
                    self._failed()
                case act_.ExitCode(code):
                    self.books.raise_exit(code)
                case act_.BeginStop(fast, code):
                    self.books.raise_exit(code)
                    self.stop(fast=fast)
                case act_.BootFailing(message):
                    self._boot_failing(message)
                case act_.Log(level, message):
                    logger.log(level, "%s", message)
                case act_.Finish():
                    self.hooks.call("on_exit", self.server)
                    if self.loop.done is not None:
                        self.loop.done.set()

    # Spawn -------------------------------------------------------------------

    def _spawn_one(self) -> bool:
        try:
            worker, handle = self.spawner.spawn(self.pool.generation)
        except SpawnError as exc:
            logger.error("%s; retrying with backoff", exc)
            self._failed()
            return False
        worker.serves_error = self.boots.reload_error is not None
        self.pool.workers[worker.pid], self.server.WORKERS[worker.pid] = worker, handle
        logger.info("Booting worker %d (generation %d)", worker.pid, worker.generation)
        if self.loop.tasks is not None:  # else run() starts the readers
            self._start_readers(worker)
        return True

    def _start_readers(self, worker: WorkerRecord) -> None:
        assert self.loop.tasks is not None
        channels.watch(worker, self.on_message, self.reconcile)
        if worker.output is not None:
            self.loop.tasks.start_soon(outputs.read_output, worker)

    # Watch -------------------------------------------------------------------

    def on_message(self, worker: WorkerRecord, message: Message) -> bool:
        now = time.monotonic()
        worker.last_beat = now
        if isinstance(message, Ready) and worker.state is WorkerState.BOOTING:
            worker.transition(WorkerState.SERVING)
            worker.serving_at = now
            logger.info("Worker %d serving (booted in %.0f ms)", worker.pid, message.boot_ms)
            self.act([act_.BootFailing(None)])
            booting = any(w.state is WorkerState.BOOTING for w in self.pool.workers.values())
            self.pool.served = self.pool.served or not booting
        elif isinstance(message, Heartbeat):
            worker.heard(message)
            left = message.draining and worker.state is WorkerState.SERVING
            if left:
                self.act([act_.Leave(worker.pid, Reason.LEFT)])  # a SIGTERM sent to it
            recycled = policy.recycles([worker], now, self._checks())
            self.act(recycled)
            return left or bool(recycled)
        elif isinstance(message, BootFailure):
            worker.boot_failure = message.message
        return True

    async def _tick(self) -> None:
        while True:
            interval = self.loop.cadence.interval = self._tick_interval()
            channels.settle(self.pool, interval > BUSY_TICK, self.on_message, self.reconcile)
            await anyio.sleep(interval)
            now = time.monotonic()
            channels.read_parked(self.pool, self.on_message)
            stalled = self.on_tick(now)
            self.reconcile()
            self.loop.extensions.tick(now, stalled=stalled, stopping=bool(self.stop_state))

    def on_tick(self, now: float) -> bool:
        """The periodic checks; True when the supervisor itself was not running for a while."""
        late = self.loop.cadence.paused_for(now)
        if stalled := late is not None:
            self.pool.rebaseline(now, late)
            if self.stop_state is not None:
                fast, deadline = self.stop_state.fast, self.stop_state.deadline + late
                self.stop_state = policy.StopState(fast, deadline)
        self.probe.measure(self.pool.workers.values(), now)
        workers = list(self.pool.workers.values())
        self.act(policy.check(workers, now, self._checks(), stalled=stalled))
        self.act(self.rollouts.tick(now, stopping=self.stop_state is not None))
        return stalled

    def _tick_interval(self) -> float:
        moving = (
            self.stop_state or self.rollouts.current or not self.backoff.allows(time.monotonic())
        )
        workers, longest = list(self.pool.workers.values()), self.loop.extensions.longest_tick
        return tick_interval(workers, self.pool.target, in_motion=bool(moving), longest=longest)

    def _checks(self) -> policy.Checks:
        c = self.config
        return policy.Checks(c.timeout_worker, c.timeout_boot, c.max_memory, c.max_memory_total)

    # Act ---------------------------------------------------------------------

    def _failed(self) -> None:
        delay = self.backoff.failed(time.monotonic())
        if delay:
            logger.warning(
                "Crash loop: %d failures in a row; next spawn in %.1fs", self.backoff.streak, delay
            )

    def _boot_failing(self, message: str | None) -> None:
        if self.config.reload and message is not None:
            self.boots.reload_failed(message, list(self.pool.workers.values()))
        elif message is None and self.boots.failing is not None:
            logger.info("Workers boot again; the pool is serving")
        self.boots.failing = message

    # Exits -------------------------------------------------------------------

    def reap_workers(self) -> None:
        channels.read_parked(self.pool, self.on_message)  # last words, or a worker's nudge
        for pid, status in reap_children():
            worker = self.pool.workers.pop(pid, None)
            if worker is None:
                self.loop.extensions.reaped(pid, status)  # an upgrade's successor, a stranger
                continue
            self.on_exit(worker, status)

    def on_exit(self, worker: WorkerRecord, status: int) -> None:
        channels.drain(worker, self.on_message)
        outputs.relay_output(worker)
        outputs.log_stack_dump(worker)
        worker.transition(WorkerState.STOPPED)
        self.books.close(worker)
        if self.spawner.harvest is not None:
            self.spawner.harvest.retire(worker.pid)
        self.act(self.rollouts.on_exit(worker))
        handle = self.server.WORKERS.pop(worker.pid, None)
        if handle is not None:
            handle.alive, handle.requests, handle.rss = False, worker.requests, worker.rss
            handle.leaving = worker.leaving
            self.hooks.call("child_exit", self.server, handle)  # worker_exit ran in the worker
        rolling = tuple(
            w.pid for w in self.pool.workers.values() if w.retiring is Reason.RELOAD and w.live
        )
        situation = policy.Situation(
            now=time.monotonic(),
            stopping=self.stop_state is not None,
            reload_mode=self.config.reload,
            others_serving=bool(self.pool.serving()),
            pool_served=self.pool.served,
            already_shown=self.boots.shown(worker.boot_failure),
            rolling=rolling,
        )
        ended = policy.Ended(exit_code(status), describe_status(status))
        self.act(policy.on_exit(worker, ended, situation))

    # Operations (signals, the control socket, --reload) ----------------------

    def stop(self, *, fast: bool) -> None:
        """Stop accepting, drain every worker (or fast: SIGQUIT), then exit."""
        now = time.monotonic()
        first = self.stop_state is None
        if not first and (fast is False or (self.stop_state and self.stop_state.fast)):
            return
        timeout = FAST_STOP_SECONDS if fast else self.config.timeout_graceful + DRAIN_MARGIN
        self.stop_state = policy.StopState(fast, now + timeout)
        titles.set_state("stopping" if fast else "draining")
        if first:
            for sock in self.spawner.listeners:
                sock.close()  # workers hold their own copies of the listeners
        for pid in list(self.pool.workers):
            self.act([act_.Quit(pid) if fast else act_.Drain(pid, Reason.SHUTDOWN, last=True)])

    def roll(self) -> int:
        """A rolling restart of every live worker, ``restart_batch`` at a time."""
        self.pool.batch = self.config.restart_batch
        return self.pool.roll()

    def source_changed(self) -> None:
        """--reload: replace every worker at once (development wants speed), new ones first."""
        self.boots.source_changed()
        self.backoff.reset()
        self.pool.roll()
        self.pool.batch = max(self.pool.target, 1)

    def snapshot(self) -> PoolSnapshot:
        """The pool as readers see it (status, metrics, hooks)."""
        return snapshot_of(self)

    def app_metrics(self) -> Callable[[], list[Family]] | None:
        """What the metrics endpoint calls for the app's pooled families, if it serves them."""
        harvest = self.spawner.harvest
        return harvest.families if harvest is not None else None


def _harvest(config: Config) -> Harvest | None:
    """Where the app's prometheus_client values are gathered, when metrics are served."""
    if not (config.metrics_bind or config.metrics_path):
        return None
    from supervisor.appmetrics.harvest import Harvest  # noqa: PLC0415 - only with metrics

    return Harvest(pid_label=config.metrics_pid_label)


def snapshot_of(arbiter: Arbiter) -> PoolSnapshot:
    """The pool as readers see it (status, metrics, hooks), from the arbiter's records."""
    now = time.monotonic()
    stopping = StopMode.RUNNING
    if arbiter.stop_state is not None:
        stopping = StopMode.FAST if arbiter.stop_state.fast else StopMode.GRACEFUL
    workers = sorted(arbiter.pool.workers.values(), key=lambda w: w.started_at)
    books = arbiter.books
    return PoolSnapshot(
        pid=arbiter.server.pid,
        version=__version__,
        app=arbiter.config.app,
        instance_id=arbiter.config.instance_id or "",
        uptime_s=round(now - arbiter.pool.started_at, 3),
        target=arbiter.pool.target,
        generation=arbiter.pool.generation,
        stopping=stopping,
        workers=tuple(w.view(now) for w in workers),
        restarts=dict(sorted(books.restarts.items())),
        exited_requests=books.exited_requests,
        exited_stats=dict(books.exited_stats),
        boot_failing=arbiter.boots.failing,
        rollouts=dict(sorted(arbiter.rollouts.results.items())),
        rollout=arbiter.rollouts.status(),
    )
