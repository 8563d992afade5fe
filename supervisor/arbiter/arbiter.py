"""The supervisor's event loop, as a story: spawn, watch, decide, act.

Events come from a few sources: signals (one task turns them into calls,
see :mod:`supervisor.arbiter.signals`), each worker's channel, a tick twice
a second, the --reload watcher and the control socket. Each updates the
workers' records, asks :mod:`supervisor.arbiter.policy` what it means, and
hands the answer to :meth:`Arbiter.act`, the one place where workers are
forked, signalled and killed. Nothing blocks: forks and kills are syscalls,
waits are deadlines checked on the tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from supervisor import __version__, logs
from supervisor.arbiter import actions as act_
from supervisor.arbiter import outputs, policy
from supervisor.arbiter import signals as signals_
from supervisor.arbiter.books import Backoff, Books
from supervisor.arbiter.boots import BootWatch
from supervisor.arbiter.hooks import Hooks, ServerHandle, WorkerHandle
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.arbiter.probe import RssProbe
from supervisor.arbiter.spawn import Spawner, SpawnError
from supervisor.channel import BootFailure, Heartbeat, Message, Ready, read_messages, send_drain
from supervisor.config import Config
from supervisor.pool import PoolSnapshot, Reason, StopMode, WorkerState
from supervisor.system.exits import describe_status, exit_code, reap_children

logger = logging.getLogger("supervisor")

TICK_SECONDS = 0.5
STALLED_AFTER = 2.0  # a tick this late: the supervisor itself was not running
DRAIN_MARGIN = 5.0  # after --timeout-graceful, for lifespan shutdown before SIGKILL
FAST_STOP_SECONDS = 3.0
HUNG_KILL_DELAY = 0.2  # time for faulthandler to write the stack before SIGKILL


@dataclass
class Pool:
    """The workers and what they are reconciled towards."""

    target: int
    batch: int
    generation: int = 1
    spawned: int = 0  # every fork so far (a hook's worker.age)
    served: bool = False  # some worker has served since start
    workers: dict[int, WorkerRecord] = field(default_factory=dict)

    def serving(self) -> list[WorkerRecord]:
        return [w for w in self.workers.values() if w.state is WorkerState.SERVING]

    def roll(self) -> int:
        """Mark every live worker for a rolling restart; how many."""
        self.generation += 1
        live = [w for w in self.workers.values() if w.live]
        for worker in live:
            worker.retiring = Reason.RELOAD
        return len(live)


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
        self.listeners = listeners
        self.pool = Pool(target=config.workers, batch=config.restart_batch)
        self.books = Books()
        self.backoff = Backoff()
        self.boots = BootWatch(preloaded_app)
        self.hooks = hooks or Hooks()
        self.server = server or ServerHandle(config)
        self.server._snapshot = self.snapshot
        self.probe = RssProbe()
        self.stop_state: policy.StopState | None = None
        self.on_hup = on_hup
        self.started_at = time.monotonic()
        self.spawner = Spawner(
            config,
            listeners,
            json_logs=logs.state.json,
            pre_fork=self._pre_fork,
            post_fork=self._post_fork,
            app=self.boots.app,
        )
        self._handle: WorkerHandle | None = None  # the worker being forked, for its hooks
        self._tg: TaskGroup | None = None
        self._done: anyio.Event | None = None  # made in run(): it needs the event loop
        self._last_tick = 0.0

    # The story ---------------------------------------------------------------

    def start(self) -> None:
        """Fork the first workers before the event loop exists, so they boot while the
        supervisor sets its loop up: a faster first response."""
        signals_.remember_until_the_loop_listens()
        self.spawner.warm_up()
        for _ in range(self.pool.target):
            if signals_.stop_pending():
                logger.info("Stop requested while starting: no more workers forked")
                return
            if not self._spawn_one():
                return

    async def run(self, *sources: Any) -> int:
        """Serve until stopped; ``sources`` are more tasks (control socket, metrics...)."""
        self._done = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for worker in list(self.pool.workers.values()):
                self._start_readers(worker)
            tg.start_soon(signals_.watch, self)
            tg.start_soon(self._tick)
            for source in sources:
                tg.start_soon(source)
            if not signals_.stop_pending():  # else the signal watcher stops first
                self.reconcile()
            await self._done.wait()
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
        self.act(policy.pool_actions(workers, pool.target, pool.batch, self.backoff.allows(now)))

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
                    self._drain(worker, reason, last)
                case act_.Leave(_, reason) if worker is not None:
                    self._leave(worker, reason)
                case act_.Quit() if worker is not None:
                    self._leave(worker, worker.leaving or Reason.SHUTDOWN, quiet=True)
                    self.signal_worker(worker, signal.SIGQUIT)
                case act_.Kill(_, reason, why, dump) if worker is not None and not worker.killed:
                    self._kill(worker, reason, why, dump)
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
                    if self._done is not None:
                        self._done.set()

    # Spawn -------------------------------------------------------------------

    def _spawn_one(self) -> bool:
        self.pool.spawned += 1
        self._handle = WorkerHandle(self.pool.spawned, self.pool.generation, self.config)
        try:
            worker = self.spawner.spawn(self.pool.generation)
        except SpawnError as exc:
            logger.error("%s; retrying with backoff", exc)
            self._failed()
            return False
        worker.serves_error = self.boots.reload_error is not None
        self.pool.workers[worker.pid] = worker
        self._handle.pid = worker.pid
        self.server.WORKERS[worker.pid] = self._handle
        logger.info("Booting worker %d (generation %d)", worker.pid, worker.generation)
        if self._tg is not None:  # else run() starts the readers
            self._start_readers(worker)
        return True

    def _pre_fork(self) -> None:
        self.hooks.call("pre_fork", self.server, self._handle)

    def _post_fork(self) -> None:  # pragma: no cover - in the new worker
        assert self._handle is not None
        self._handle.pid = os.getpid()
        self.hooks.call("post_fork", self.server, self._handle)

    def _start_readers(self, worker: WorkerRecord) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._read_channel, worker)
        if worker.output is not None:
            self._tg.start_soon(outputs.read_output, worker)

    # Watch -------------------------------------------------------------------

    async def _read_channel(self, worker: WorkerRecord) -> None:
        while worker.channel is not None and worker.channel.fileno() >= 0:
            try:
                await anyio.wait_readable(worker.channel)
            except (anyio.ClosedResourceError, OSError):
                return
            if not self._drain_channel(worker):
                return
            self.reconcile()

    def _drain_channel(self, worker: WorkerRecord) -> bool:
        """Handle every waiting message; False once the worker's end is closed."""
        if worker.channel is None:
            return False
        messages, eof = read_messages(worker.channel)
        for message in messages:
            self.on_message(worker, message)
        if eof:
            anyio.notify_closing(worker.channel)
            worker.channel.close()
            worker.channel = None
        return not eof

    def on_message(self, worker: WorkerRecord, message: Message) -> None:
        now = time.monotonic()
        worker.last_beat = now
        if isinstance(message, Ready) and worker.state is WorkerState.BOOTING:
            worker.transition(WorkerState.SERVING)
            worker.serving_at = now
            logger.info("Worker %d serving (booted in %.0f ms)", worker.pid, message.boot_ms)
            self.act([act_.BootFailing(None)])
            if not self.pool.served and not any(
                w.state is WorkerState.BOOTING for w in self.pool.workers.values()
            ):
                self.pool.served = True  # gunicorn calls when_ready once, not per respawn
                self.hooks.call("when_ready", self.server)
        elif isinstance(message, Heartbeat):
            worker.requests, worker.in_flight = message.requests, message.in_flight
            worker.connections = message.connections
            worker.stats = message.stats if message.stats is not None else worker.stats
            if message.recycle and worker.wants_recycle is None:
                worker.wants_recycle = Reason(message.recycle)
            if message.draining and worker.state is WorkerState.SERVING:
                self.act([act_.Leave(worker.pid, Reason.LEFT)])  # a SIGTERM sent to it
            self.act(policy.recycles([worker], now, self._checks()))
        elif isinstance(message, BootFailure):
            worker.boot_failure = message.message

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(TICK_SECONDS)
            self.on_tick(time.monotonic())
            self.reconcile()

    def on_tick(self, now: float) -> None:
        late = now - self._last_tick - TICK_SECONDS if self._last_tick else 0.0
        self._last_tick = now
        stalled = late > STALLED_AFTER
        if stalled:
            self._rebaseline(now, late)
        self.probe.measure(self.pool.workers.values(), now)
        workers = list(self.pool.workers.values())
        self.act(policy.check(workers, now, self._checks(), stalled=stalled))

    def _rebaseline(self, now: float, late: float) -> None:
        """The supervisor was not running for ``late`` seconds: the workers' silence over
        that time says nothing about them; every check starts again from now."""
        logger.warning(
            "The supervisor was paused for %.1fs (SIGSTOP, a frozen VM?); liveness checks"
            " start again from now",
            late,
        )
        for worker in self.pool.workers.values():
            worker.last_beat = now
            if worker.state is WorkerState.BOOTING:
                worker.started_at += late
            if worker.drain_deadline is not None:
                worker.drain_deadline += late
        if self.stop_state is not None:
            self.stop_state = policy.StopState(
                self.stop_state.fast, self.stop_state.deadline + late
            )

    def _checks(self) -> policy.Checks:
        c = self.config
        return policy.Checks(c.timeout_worker, c.timeout_boot, c.max_memory, c.max_memory_total)

    # Act ---------------------------------------------------------------------

    def _drain(self, worker: WorkerRecord, reason: Reason, last: bool = False) -> None:
        if worker.state in (WorkerState.DRAINING, WorkerState.STOPPED):
            return
        self._leave(worker, reason, quiet=True)
        logger.info("Draining worker %d (%s)", worker.pid, reason)
        if worker.channel is not None:
            send_drain(worker.channel, last)  # read by the worker when SIGTERM arrives
        self.signal_worker(worker, signal.SIGTERM)

    def _leave(self, worker: WorkerRecord, reason: Reason, *, quiet: bool = False) -> None:
        if worker.state is WorkerState.STOPPED:
            return
        if not quiet:
            logger.warning(
                "Worker %d is draining on its own (a SIGTERM sent to it?); replacing it",
                worker.pid,
            )
        worker.transition(WorkerState.DRAINING)
        worker.leaving = worker.leaving or reason
        deadline = time.monotonic() + self.config.timeout_graceful + DRAIN_MARGIN
        worker.drain_deadline = min(worker.drain_deadline or deadline, deadline)

    def _kill(self, worker: WorkerRecord, reason: Reason, why: str, dump: bool) -> None:
        """The one place that sends SIGKILL (after SIGABRT for a stack dump)."""
        if worker.state is not WorkerState.STOPPED:
            worker.transition(WorkerState.DRAINING)
        worker.leaving = worker.leaving or reason
        worker.killed = True
        if why:
            logger.error("Worker %d %s", worker.pid, why)
        if dump and self._tg is not None:
            self.signal_worker(worker, signal.SIGABRT)
            self._tg.start_soon(self._signal_later, worker, signal.SIGKILL, HUNG_KILL_DELAY)
        else:
            self.signal_worker(worker, signal.SIGKILL)

    async def _signal_later(self, worker: WorkerRecord, sig: int, delay: float) -> None:
        await anyio.sleep(delay)
        if worker.state is not WorkerState.STOPPED:
            self.signal_worker(worker, sig)

    def signal_worker(self, worker: WorkerRecord, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: SIGCHLD reaps it
            os.kill(worker.pid, sig)

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
        for pid, status in reap_children():
            worker = self.pool.workers.pop(pid, None)
            if worker is None:
                logger.debug("Reaped process %d (not a worker): %s", pid, describe_status(status))
                continue
            self.on_exit(worker, status)

    def on_exit(self, worker: WorkerRecord, status: int) -> None:
        self.probe.forget(worker.pid)
        self._drain_channel(worker)
        outputs.relay_output(worker)
        outputs.log_stack_dump(worker)
        worker.transition(WorkerState.STOPPED)
        self.books.close(worker)
        handle = self.server.WORKERS.pop(worker.pid, None)
        if handle is not None:
            handle.alive, handle.requests, handle.rss = False, worker.requests, worker.rss
            handle.leaving = worker.leaving
            self.hooks.call("worker_exit", self.server, handle)
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
        if first:
            for sock in self.listeners:
                sock.close()  # workers hold their own copies of the listeners
        for worker in list(self.pool.workers.values()):
            if fast:
                self.act([act_.Quit(worker.pid)])
            else:
                self.act([act_.Drain(worker.pid, Reason.SHUTDOWN, last=True)])

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
        now = time.monotonic()
        stopping = StopMode.RUNNING
        if self.stop_state is not None:
            stopping = StopMode.FAST if self.stop_state.fast else StopMode.GRACEFUL
        workers = sorted(self.pool.workers.values(), key=lambda w: w.started_at)
        return PoolSnapshot(
            pid=self.server.pid,
            version=__version__,
            app=self.config.app,
            instance_id=self.config.instance_id or "",
            uptime_s=round(now - self.started_at, 3),
            target=self.pool.target,
            generation=self.pool.generation,
            stopping=stopping,
            workers=tuple(w.view(now) for w in workers),
            restarts=dict(sorted(self.books.restarts.items())),
            exited_requests=self.books.exited_requests,
            exited_stats=dict(self.books.exited_stats),
            boot_failing=self.boots.failing,
        )
