"""The supervisor's event loop: spawn, watch, decide, act.

One anyio task turns signals into calls (``handle_term``, ``handle_hup``...),
one reads each worker's channel, one ticks twice a second to check memory,
age, liveness and deadlines. Every event updates the workers' records and then
calls :meth:`Arbiter.reconcile`, which asks :func:`supervisor.policy.plan`
what to do and does it. Nothing blocks: forks and kills are syscalls, waits
are deadlines checked on the tick.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import random
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from supervisor import logs
from supervisor.arbiter import hooks as hooks_module
from supervisor.arbiter import policy
from supervisor.arbiter.lifecycle import RecycleReason, WorkerRecord, WorkerState
from supervisor.channel import BootFailure, Heartbeat, Message, Ready, make_pair, read_messages
from supervisor.config import Config, format_size
from supervisor.endpoints import control, metrics
from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_ERROR, EXIT_OK, EXIT_WORKER_BOOT_ERROR
from supervisor.logs import capture
from supervisor.system import capacity, early_signals, sockets
from supervisor.system import watch as reload
from supervisor.system.exits import describe_status, exit_code, reap_children
from supervisor.system.watch import ReloadErrorApp

if TYPE_CHECKING:
    import psutil

logger = logging.getLogger("supervisor")

TICK_SECONDS = 0.5
DRAIN_MARGIN = 5.0  # after --timeout-graceful, for lifespan shutdown before SIGKILL
FAST_STOP_SECONDS = 3.0
HUNG_KILL_DELAY = 0.2  # time for faulthandler to write the stack before SIGKILL
WORKER_MODULES = (
    "supervisor.worker.main",
    "supervisor.worker.assemble",
    "uvicorn.config",
    "uvicorn.middleware.proxy_headers",
)
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
)


class Arbiter:
    """Keeps ``target`` workers serving on the shared listeners until told to stop."""

    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        *,
        preloaded_app: Any | None = None,
        hooks: hooks_module.Hooks | None = None,
        on_hup: Any | None = None,
        metrics_listener: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.preloaded_app = preloaded_app
        self.hooks = hooks or hooks_module.Hooks()
        self.on_hup = on_hup
        self.metrics_listener = metrics_listener
        self.pid = os.getpid()
        self.target = config.workers
        self.generation = 1
        self.workers: dict[int, WorkerRecord] = {}
        self.announced_ready = False
        self.batch = config.restart_batch
        self.reload_error: str | None = None  # --reload: why no worker can load the app
        self.rng = random.Random()
        self.exit_code = EXIT_OK
        self.stopping: str | None = None  # None, "graceful" or "fast"
        self.stop_deadline = 0.0
        self.crash_streak = 0
        self.last_crash: float | None = None
        self.spawn_not_before = 0.0
        self.boot_error_shown: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.exited_stats: dict[str, float] = {}
        self.exited_requests = 0
        self.started_at = time.monotonic()
        self._rss_checked = 0.0
        self._processes: dict[int, psutil.Process] = {}
        self._tg: TaskGroup | None = None
        self._early_signals: list[int] = []
        self._done: anyio.Event | None = None  # made in run(): it needs the event loop

    # The story ---------------------------------------------------------------

    def start(self) -> None:
        """Fork the first workers before the event loop exists, so they boot
        while the supervisor sets its loop up: a faster first response."""
        for sig in HANDLED_SIGNALS:  # until run() listens: only remember them
            signal.signal(sig, self._remember_signal)
        # What came before (cli.main remembered it) goes first, so order holds.
        self._early_signals[:0] = early_signals.take()
        self.warm_worker_imports()
        self.spawn_first_workers()

    def spawn_first_workers(self) -> None:
        """The first forks, one by one: a stop signal between two of them ends
        the spawning, and the loop then starts and stops cleanly."""
        for _ in range(self.target):
            if self.stop_pending():
                logger.info("Stop requested while starting: no more workers forked")
                return
            if not self.spawn_worker():
                return

    def stop_pending(self) -> bool:
        """A stop signal came before the loop could handle it."""
        return bool(early_signals.STOP_SIGNALS.intersection(self._early_signals))

    def _remember_signal(self, sig: int, frame: object) -> None:
        self._early_signals.append(sig)

    async def run(self) -> int:
        self._done = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for worker in list(self.workers.values()):
                self._start_readers(worker)
            tg.start_soon(self._watch_signals)
            tg.start_soon(self._tick)
            if self.config.reload:
                tg.start_soon(reload.watch, self.config, self.handle_source_change)
            control_sock = control.open_control_socket(self.control_path)
            if control_sock is not None:
                tg.start_soon(control.serve, control_sock, control.handlers_for(self))
            if self.metrics_listener is not None:
                tg.start_soon(metrics.serve, self.metrics_listener, self.metrics_text)
            if not self.stop_pending():  # else _watch_signals stops first
                self.reconcile()
            await self._done.wait()
            tg.cancel_scope.cancel()
        return self.exit_code

    def warm_worker_imports(self) -> None:
        """Import the worker's stack (uvicorn, its protocols, uvloop) before forking:
        every worker inherits it imported (copy-on-write, shared pages), so a
        replacement serves within tens of milliseconds of a crash."""
        for name in WORKER_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        from uvicorn import config as uv  # noqa: PLC0415 - imported just above

        chosen = (
            uv.HTTP_PROTOCOLS.get(self.config.http),
            uv.WS_PROTOCOLS.get(self.config.ws),
            uv.LIFESPAN.get(self.config.lifespan),
            uv.LOOP_FACTORIES.get(self.config.loop),
        )
        for target in chosen:
            if target:
                with contextlib.suppress(ImportError):
                    importlib.import_module(target.partition(":")[0])

    @property
    def control_path(self) -> Path:
        return control.socket_path(self.config, self.pid)

    def status(self) -> control.Status:
        return control.build_status(self, time.monotonic())

    def metrics_text(self) -> str:
        return metrics.render(self, time.monotonic())

    def metrics_reply(self) -> control.MetricsReply:
        return control.MetricsReply(metrics=self.metrics_text())

    def reconcile(self) -> None:
        """Decide what the pool needs now and act on it."""
        if self.stopping:
            self._stop_step()
            return
        now = time.monotonic()
        decision = policy.plan(
            list(self.workers.values()),
            self.target,
            self.batch,
            may_spawn=now >= self.spawn_not_before,
        )
        for worker, reason in decision.drain:
            self.drain_worker(worker, reason)
        for _ in range(decision.spawn):
            if not self.spawn_worker():
                break

    # Spawn -------------------------------------------------------------------

    def spawn_worker(self) -> bool:
        limits = policy.worker_limits(
            self.config.max_requests,
            self.config.max_requests_jitter,
            self.config.max_lifetime,
            self.config.lifetime_jitter,
            self.rng,
        )
        try:
            listeners = self._listeners_for_worker()
        except OSError as exc:
            self._note_crash(time.monotonic())
            logger.error("Cannot open a --reuse-port listener (%s); retrying with backoff", exc)
            return False
        own = [sock for sock in listeners if sock not in self.listeners]
        parent_end, child_end = make_pair()
        dump_r, dump_w = os.pipe()
        output_r, output_w = os.pipe() if logs.state.json else (-1, -1)
        self.hooks.call("pre_fork", self)
        # Until the child has reset its handlers, a signal meant for it (a drain
        # during boot) would run the supervisor's handlers and be lost: hold
        # signals across fork; the child unblocks them once they mean what they should.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for sock in (parent_end, child_end, *own):
                sock.close()
            _close_fds(dump_r, dump_w, output_r, output_w)
            self._note_crash(time.monotonic())
            logger.error("Cannot fork a worker (%s); retrying with backoff", exc.strerror or exc)
            return False
        if pid == 0:  # pragma: no cover - runs in the child, measured by the e2e tests
            from supervisor.worker import WorkerStart, run_worker  # noqa: PLC0415 - warmed up

            parent_end.close()
            self.hooks.call("post_fork", self)
            app = ReloadErrorApp(self.reload_error) if self.reload_error else self.preloaded_app
            run_worker(
                WorkerStart(
                    self.config,
                    listeners,
                    child_end,
                    self.pid,
                    app,
                    max_requests=limits.max_requests,
                    dump_fd=dump_w,
                    output_fd=output_w,
                )
            )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        _close_fds(dump_w, output_w)
        os.set_blocking(dump_r, False)
        for sock in own:  # the worker's own accept queue dies with the worker
            sock.close()
        now = time.monotonic()
        worker = WorkerRecord(
            pid=pid,
            generation=self.generation,
            started_at=now,
            channel=parent_end,
            max_requests=limits.max_requests,
            max_lifetime=limits.max_lifetime,
            last_beat=now,
            serves_error=self.reload_error is not None,
            dump_fd=dump_r,
        )
        if output_r >= 0:
            os.set_blocking(output_r, False)
            worker.output = capture.PipeLines(output_r)
        self.workers[pid] = worker
        logger.info("Booting worker %d (generation %d)", pid, self.generation)
        if self._tg is not None:  # else run() starts the readers (see start)
            self._start_readers(worker)
        return True

    def _start_readers(self, worker: WorkerRecord) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._read_channel, worker)
        if worker.output is not None:
            self._tg.start_soon(self._read_output, worker)

    async def _read_output(self, worker: WorkerRecord) -> None:
        """JSON mode: what the worker wrote to fds 1/2 outside logging, one record a line."""
        output = worker.output
        while output is not None and worker.output is output:
            try:
                await anyio.wait_readable(output.fd)
            except (anyio.ClosedResourceError, OSError):
                return
            if not self._relay_output(worker):
                return

    def _relay_output(self, worker: WorkerRecord) -> bool:
        output = worker.output
        if output is None:
            return False
        lines, eof = output.read()
        for line in lines:
            capture.worker_record("output", logging.INFO, line, worker.pid)
        if eof:
            anyio.notify_closing(output.fd)
            output.close()
            worker.output = None
        return not eof

    def _log_stack_dump(self, worker: WorkerRecord) -> None:
        """faulthandler's dump of a worker killed as hung (or crashed in C), as one record."""
        if worker.dump_fd < 0:
            return
        dump = capture.read_dump(worker.dump_fd)
        os.close(worker.dump_fd)
        worker.dump_fd = -1
        if not dump:
            return
        if logs.state.json:
            capture.worker_record(
                "supervisor",
                logging.ERROR,
                f"Worker {worker.pid} stack dump",
                worker.pid,
                stack=dump,
            )
        else:
            logger.error("Worker %d stack dump:\n%s", worker.pid, dump)

    def _listeners_for_worker(self) -> list[socket.socket]:
        if not self.config.reuse_port:
            return self.listeners
        return sockets.per_worker_listeners(self.listeners, self.config.backlog)

    # Watch -------------------------------------------------------------------

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
            # Signals that came before this receiver existed (a fast SIGTERM, a worker's
            # early exit) were only remembered; handle them now, in order.
            early, self._early_signals = [*self._early_signals, signal.SIGCHLD], []
            for sig in early:
                self.handle_signal(sig)
            async for sig in signals:
                self.handle_signal(sig)

    async def _read_channel(self, worker: WorkerRecord) -> None:
        sock = worker.channel
        while sock is not None and sock.fileno() >= 0:
            try:
                await anyio.wait_readable(sock)
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
            self.handle_message(worker, message)
        if eof:
            self._close_channel(worker)
        return not eof

    def _close_channel(self, worker: WorkerRecord) -> None:
        if worker.channel is not None:
            anyio.notify_closing(worker.channel)
            worker.channel.close()
            worker.channel = None

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(TICK_SECONDS)
            self.check_workers(time.monotonic())
            self.reconcile()

    def handle_message(self, worker: WorkerRecord, message: Message) -> None:
        now = time.monotonic()
        worker.last_beat = now
        if isinstance(message, Ready):
            if worker.state is WorkerState.BOOTING:
                worker.transition(WorkerState.SERVING)
                worker.serving_at = now
                logger.info("Worker %d serving (booted in %.0f ms)", worker.pid, message.boot_ms)
                if not self.announced_ready and all(
                    w.state is not WorkerState.BOOTING for w in self.workers.values()
                ):
                    self.announced_ready = True  # gunicorn calls when_ready once, not per respawn
                    self.hooks.call("when_ready", self)
        elif isinstance(message, Heartbeat):
            worker.requests = message.requests
            worker.in_flight = message.in_flight
            worker.connections = message.connections
            if message.stats is not None:
                worker.stats = message.stats
            self._mark_for_recycle(worker, now)
        elif isinstance(message, BootFailure):
            worker.boot_failure = message.message

    # Decide ------------------------------------------------------------------

    def check_workers(self, now: float) -> None:
        """The periodic checks: memory, age, liveness, boot and drain deadlines."""
        if now - self._rss_checked >= 1.0:
            self._rss_checked = now
            self._measure_rss()
        for worker in list(self.workers.values()):
            if policy.is_hung(worker, now, self.config.timeout_worker):
                self.kill_hung(worker, now)
            elif policy.boot_overdue(worker, now, self.config.timeout_boot):
                logger.error(
                    "Worker %d did not start serving within %.0fs (--timeout-boot); killing it",
                    worker.pid,
                    self.config.timeout_boot,
                )
                self._kill(worker)
            elif worker.drain_deadline is not None and now > worker.drain_deadline:
                if not worker.kill_sent:
                    logger.error(
                        "Worker %d still draining after its deadline; killed with %d request(s)"
                        " in flight",
                        worker.pid,
                        worker.in_flight,
                    )
                    self._kill(worker)
            else:
                self._mark_for_recycle(worker, now)
        victim = policy.memory_total_victim(
            list(self.workers.values()), self.config.max_memory_total
        )
        if victim is not None:
            self._retire(victim, RecycleReason.MEMORY_TOTAL)

    def _mark_for_recycle(self, worker: WorkerRecord, now: float) -> None:
        if worker.state is not WorkerState.SERVING or worker.retire_reason is not None:
            return
        reason = policy.recycle_reason(worker, now, self.config.max_memory)
        if reason is not None:
            self._retire(worker, reason)

    def _retire(self, worker: WorkerRecord, reason: RecycleReason) -> None:
        worker.retire_reason = reason
        detail = {
            RecycleReason.MAX_REQUESTS: f"{worker.requests} requests, limit {worker.max_requests}",
            RecycleReason.MEMORY: f"RSS {format_size(worker.rss)}, limit "
            f"{format_size(self.config.max_memory or 0)}",
            RecycleReason.MEMORY_TOTAL: f"largest worker at RSS {format_size(worker.rss)}, total "
            f"limit {format_size(self.config.max_memory_total or 0)}",
            RecycleReason.LIFETIME: f"age {worker.age(time.monotonic()):.0f}s, limit "
            f"{worker.max_lifetime:.0f}s",
        }.get(reason, "")
        logger.info("Recycling worker %d (%s: %s)", worker.pid, reason, detail)

    def _measure_rss(self) -> None:
        import psutil  # noqa: PLC0415 - after the first fork, off the start-up path

        for pid, worker in self.workers.items():
            if worker.state is WorkerState.STOPPED:
                continue
            try:
                process = self._processes.get(pid) or self._processes.setdefault(
                    pid, psutil.Process(pid)
                )
                worker.rss = process.memory_info().rss
            except psutil.Error:
                continue

    # Act ---------------------------------------------------------------------

    def drain_worker(self, worker: WorkerRecord, reason: RecycleReason) -> None:
        if worker.state in (WorkerState.DRAINING, WorkerState.STOPPED):
            return
        worker.transition(WorkerState.DRAINING)
        worker.drain_reason = reason
        worker.drain_deadline = time.monotonic() + self.config.timeout_graceful + DRAIN_MARGIN
        logger.info("Draining worker %d (%s)", worker.pid, reason)
        self._signal(worker, signal.SIGTERM)

    def kill_hung(self, worker: WorkerRecord, now: float) -> None:
        logger.error(
            "Worker %d is hung: its event loop has not reported for %.1fs (--timeout-worker %s);"
            " dumping its stack and killing it",
            worker.pid,
            now - worker.last_beat,
            self.config.timeout_worker,
        )
        worker.transition(WorkerState.DRAINING)
        worker.drain_reason = RecycleReason.TIMEOUT
        worker.drain_deadline = now
        self._signal(worker, signal.SIGABRT)
        assert self._tg is not None
        self._tg.start_soon(self._kill_later, worker)

    async def _kill_later(self, worker: WorkerRecord) -> None:
        await anyio.sleep(HUNG_KILL_DELAY)
        if worker.state is not WorkerState.STOPPED:
            self._kill(worker)

    def _kill(self, worker: WorkerRecord) -> None:
        worker.kill_sent = True
        self._signal(worker, signal.SIGKILL)

    def _signal(self, worker: WorkerRecord, sig: signal.Signals) -> None:
        # Already gone: the SIGCHLD handler will reap it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    # Exits -------------------------------------------------------------------

    def reap_workers(self) -> None:
        for pid, status in reap_children():
            worker = self.workers.pop(pid, None)
            if worker is None:
                logger.debug("Reaped process %d (not a worker): %s", pid, describe_status(status))
                continue
            self._processes.pop(pid, None)
            self._drain_channel(worker)
            self._close_channel(worker)
            self._relay_output(worker)
            self._log_stack_dump(worker)
            worker.transition(WorkerState.STOPPED)
            self._account_exit(worker)
            self.hooks.call("worker_exit", self, worker)
            self.handle_worker_exit(worker, status)

    def _account_exit(self, worker: WorkerRecord) -> None:
        self.exited_requests += worker.requests
        for key, value in worker.stats.items():
            self.exited_stats[key] = self.exited_stats.get(key, 0.0) + value

    def handle_worker_exit(self, worker: WorkerRecord, status: int) -> None:
        how = describe_status(status)
        reason = worker.drain_reason
        if reason is not None:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1
            log = logger.info if reason is not RecycleReason.TIMEOUT else logger.warning
            log("Worker %d stopped (%s, %s, %d requests)", worker.pid, reason, how, worker.requests)
            # A worker stopped while still booting dies of the SIGTERM it had no
            # handler for yet: nothing was in flight, so that is a clean stop too.
            stopped_booting = not worker.ever_served and exit_code(status) == -signal.SIGTERM
            if self.stopping and exit_code(status) != EXIT_OK and not stopped_booting:
                self.exit_code = self.exit_code or EXIT_ERROR
            return
        if self.stopping:
            logger.info("Worker %d %s", worker.pid, how)
            return
        if not worker.ever_served:
            self.handle_boot_failure(worker, status)
            return
        if exit_code(status) == EXIT_OK:
            # Told to stop by someone else (a direct SIGTERM, the app's own exit): not a crash.
            logger.info("Worker %d stopped on its own (%s); replacing it", worker.pid, how)
            return
        self.restarts[RecycleReason.CRASH] = self.restarts.get(RecycleReason.CRASH, 0) + 1
        logger.error("Worker %d died: %s; replacing it", worker.pid, how)
        now = time.monotonic()
        assert worker.serving_at is not None
        if policy.in_crash_loop(now - worker.serving_at):
            self._note_crash(now)

    def handle_boot_failure(self, worker: WorkerRecord, status: int) -> None:
        code = exit_code(status)
        message = (
            worker.boot_failure or f"Worker {worker.pid} {describe_status(status)} while booting."
        )
        if message not in self.boot_error_shown:
            self.boot_error_shown.add(message)
            logger.error("Worker %d failed to boot: %s", worker.pid, message)
        if self.config.reload:
            self.keep_serving_after_bad_reload(message)
            return
        nobody_serving = not any(w.state is WorkerState.SERVING for w in self.workers.values())
        if nobody_serving:
            self.exit_code = (
                EXIT_APP_LOAD_ERROR if code == EXIT_APP_LOAD_ERROR else EXIT_WORKER_BOOT_ERROR
            )
            logger.error(
                "Workers fail before serving; stopping instead of respawning (exit code %d)",
                self.exit_code,
            )
            self.begin_stop(fast=True)
            return
        aborted = [w for w in self.workers.values() if w.retire_reason is RecycleReason.RELOAD]
        for old in aborted:
            old.retire_reason = None
        if aborted:
            logger.error(
                "Rolling restart aborted: new workers fail to boot; old workers keep serving"
            )
        self._note_crash(time.monotonic())

    def keep_serving_after_bad_reload(self, message: str) -> None:
        """--reload: new code that cannot load never takes the port down."""
        first = self.reload_error is None
        self.reload_error = message
        serving = [w for w in self.workers.values() if w.state is WorkerState.SERVING]
        for worker in serving:
            # Old workers with working code stay; error pages are refreshed with this error.
            worker.retire_reason = RecycleReason.RELOAD if worker.serves_error else None
        if not first:
            return
        if any(not w.serves_error for w in serving):
            logger.error("Reload failed; the running workers keep serving the previous code")
        else:
            logger.error("No worker can load the app; answering 503 with the error until fixed")

    def _note_crash(self, now: float) -> None:
        self.crash_streak = policy.crash_streak(self.crash_streak, self.last_crash, now)
        self.last_crash = now
        delay = policy.crash_backoff(self.crash_streak)
        self.spawn_not_before = now + delay
        if delay:
            logger.warning(
                "Crash loop: %d failures in a row; next spawn in %.1fs", self.crash_streak, delay
            )

    # Signals -----------------------------------------------------------------

    def handle_signal(self, sig: int) -> None:
        handler = {
            signal.SIGCHLD: self.reap_workers,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGHUP: self.handle_hup,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
        }.get(signal.Signals(sig))
        if handler is not None:
            handler()
        self.reconcile()

    def handle_term(self) -> None:
        logger.info("Received SIGTERM: draining workers (up to %ss)", self.config.timeout_graceful)
        self.begin_stop(fast=False)

    def handle_int(self) -> None:
        if self.stopping:
            logger.warning("Received SIGINT again: forcing exit")
            self.begin_stop(fast=True)
        else:
            logger.info("Received SIGINT: draining workers (press Ctrl-C again to force)")
            self.begin_stop(fast=False)

    def handle_quit(self) -> None:
        logger.info("Received SIGQUIT: fast shutdown")
        self.begin_stop(fast=True)

    def handle_hup(self) -> None:
        if self.stopping:
            return
        if self.on_hup is not None:
            self.on_hup(self)
        live = self.roll(self.config.restart_batch)
        logger.info(
            "Received SIGHUP: rolling restart of %d worker(s), %d at a time (generation %d)",
            live,
            self.batch,
            self.generation,
        )

    def handle_source_change(self, paths: list[str]) -> None:
        """--reload: replace every worker at once (development wants speed), new ones first."""
        if self.stopping:
            return
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        logger.info("Detected changes in %s; reloading", shown)
        reload.drop_stale_bytecode(paths)
        self.reload_error = None
        self.boot_error_shown.clear()
        self.preloaded_app = None  # preloaded code is the old code
        self.crash_streak = 0
        self.spawn_not_before = 0.0
        self.roll(max(self.target, 1))
        self.reconcile()

    def roll(self, batch: int) -> int:
        """Start a rolling restart of every live worker; how many will be replaced."""
        self.generation += 1
        self.batch = batch
        live = [w for w in self.workers.values() if w.live]
        for worker in live:
            worker.retire_reason = RecycleReason.RELOAD
        return len(live)

    def handle_ttin(self) -> None:
        refused = self.set_target(self.target + 1)
        if refused:
            logger.warning("Received SIGTTIN: staying at %d workers: %s", self.target, refused)
            return
        logger.info("Received SIGTTIN: scaling to %d workers", self.target)

    def set_target(self, workers: int) -> str | None:
        """Keep ``workers`` serving from now on (SIGTTIN, `scale N`); None, or why not.

        Growing is held to what the host can run (see :mod:`supervisor.capacity`)
        unless --allow-many-workers; shrinking is always allowed.
        """
        if workers > self.target:
            running = sum(1 for w in self.workers.values() if w.live)
            verdict = capacity.judge_here(
                workers, allowed=self.config.allow_many_workers, running=running
            )
            if verdict.refuse:
                return verdict.message
            if verdict.message:
                logger.warning("Scaling up: %s", verdict.message)
        self.target = max(1, workers)
        return None

    def handle_ttou(self) -> None:
        self.target = max(1, self.target - 1)
        logger.info("Received SIGTTOU: scaling to %d workers", self.target)

    def handle_usr1(self) -> None:
        logs.reopen()
        logger.info("Received SIGUSR1: log files reopened; asking workers to reopen theirs")
        for worker in self.workers.values():
            self._signal(worker, signal.SIGUSR1)
        self.hooks.call("reopen_logs", self)

    # Stop --------------------------------------------------------------------

    def begin_stop(self, *, fast: bool) -> None:
        now = time.monotonic()
        first = self.stopping is None
        if not first and (self.stopping == "fast" or not fast):
            return
        self.stopping = "fast" if fast else "graceful"
        if first:
            for sock in self.listeners:
                sock.close()  # refuse new connections now; workers hold their own copies
        timeout = FAST_STOP_SECONDS if fast else self.config.timeout_graceful + DRAIN_MARGIN
        self.stop_deadline = now + timeout
        for worker in self.workers.values():
            if fast:
                worker.drain_reason = worker.drain_reason or RecycleReason.SHUTDOWN
                if worker.state is not WorkerState.DRAINING:
                    worker.transition(WorkerState.DRAINING)
                self._signal(worker, signal.SIGQUIT)
            else:
                self.drain_worker(worker, RecycleReason.SHUTDOWN)

    def _stop_step(self) -> None:
        if not self.workers:
            self.hooks.call("on_exit", self)
            if self._done is not None:
                self._done.set()
            return
        if time.monotonic() > self.stop_deadline:
            left = [w for w in self.workers.values() if not w.kill_sent]
            if left:
                logger.error(
                    "%d worker(s) did not stop in time; killing them (%d request(s) abandoned)",
                    len(left),
                    sum(w.in_flight for w in left),
                )
                self.exit_code = self.exit_code or EXIT_ERROR
            for worker in left:
                self._kill(worker)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
