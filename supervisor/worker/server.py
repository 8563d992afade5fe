"""The worker's uvicorn Server: readiness, event-loop heartbeats, limits it enforces itself.

The drain lives in :mod:`supervisor.worker.drain`; the request path in
:mod:`supervisor.worker.protocol`. This class ties them to uvicorn's Server:
signals (TERM drains, QUIT is fast), the heartbeat once a second, the
keep-alive and request-head timeouts, and the open-file limit: near it a
worker stops accepting (its siblings take the shared queue) and asks to be
replaced, instead of letting uvloop accept and reset connections it cannot
serve (``Too many open files``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from supervisor import logs
from supervisor.channel import BootFailure, Heartbeat, Ready, WorkerChannel
from supervisor.errors import EXIT_WORKER_BOOT_ERROR
from supervisor.worker import closing, drain, process, ready
from supervisor.worker.counters import Counters
from supervisor.worker.drain import DrainState
from supervisor.worker.observer import Observer, loop_lag_paths

logger = logging.getLogger("supervisor.worker")

# uvicorn ticks every 0.1 s; a heartbeat goes once a second (liveness is judged in
# seconds), and at once when something the supervisor acts on changes.
HEARTBEAT_EVERY_TICKS = 10
ORPHAN_DRAIN_SECONDS = 1.0
# A SIGINT not followed by the supervisor's drain this soon was sent to this worker alone.
INTERRUPT_GRACE = 0.5
DRAIN_POLL_SECONDS = 0.05
TICK_SECONDS = 0.1  # uvicorn's main loop
FD_STOP_RATIO = 0.9  # of RLIMIT_NOFILE: headroom for what in-flight requests still open


class WorkerServer(uvicorn.Server):
    """uvicorn.Server that reports to the supervisor and drains without drops."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        channel: WorkerChannel,
        drain: DrainState,
        supervisor_pid: int,
        idle_grace: float,
        graceful: float,
        observer: Observer | None = None,
        counters: Counters | None = None,
        max_requests: int = 0,
        loop_lag_ms: float | None = None,
        ready_path: str | None = None,
    ) -> None:
        super().__init__(config)
        self.ready_path = ready_path
        self.channel = channel
        self.drain = drain
        self.supervisor_pid = supervisor_pid
        self.idle_grace = idle_grace
        self.graceful = graceful
        self.observer = observer
        self.counters = counters
        self.max_requests = max_requests
        self._limit_reported = False
        self.loop_lag = (loop_lag_ms or 0) / 1000
        self._last_tick = 0.0
        self.reopen_logs = False
        self.drain_requested = False  # SIGTERM: leave the main loop and drain
        self.accepting = True
        self.recycle: str | None = None  # asked of the supervisor: "fd-limit", "memory-hard"
        self.fd_ceiling = _fd_ceiling()
        self.boot_started = time.monotonic()
        self.drain_clean = True
        self._awaiting_head_since: dict[Any, float] = {}
        self.interrupted: float | None = None  # SIGINT to this worker (see _handle_int)
        self.on_interrupt: Callable[[], None] | None = None  # gunicorn's worker_int

    # Signals ---------------------------------------------------------------

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The supervisor coordinates shutdown: TERM drains, QUIT is fast, and a
        # terminal's Ctrl-C (sent to the whole process group) is left to it.
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle_term),
            signal.SIGQUIT: signal.signal(signal.SIGQUIT, self._handle_quit),
            signal.SIGINT: signal.signal(signal.SIGINT, self._handle_int),
            signal.SIGUSR1: signal.signal(signal.SIGUSR1, self._handle_usr1),
        }
        # A stop that came while the app was loading: honoured now, a clean exit.
        if process.early_stop == signal.SIGTERM:
            self.should_exit = True
        elif process.early_stop == signal.SIGQUIT:
            self.should_exit = self.force_exit = True
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle_term(self, sig: int, frame: FrameType | None) -> None:
        # A drain is not an exit: libraries that watch uvicorn's should_exit (sse-starlette
        # finds it through this bound handler) cancel their streams the moment it is set.
        # It is set when the drain window ends; the app gets the drain notice at once.
        if self.started:
            self.drain_requested = True
        else:
            self.should_exit = True  # still starting: nothing is open yet

    def _handle_int(self, sig: int, frame: FrameType | None) -> None:
        # A terminal's Ctrl-C reaches the whole group: the supervisor then drains us
        # within moments. Only a SIGINT meant for this worker alone (no drain follows)
        # makes it call worker_int and drain on its own, as gunicorn's workers exit.
        if not self.should_exit and self.interrupted is None:
            self.interrupted = time.monotonic()

    def _check_interrupt(self) -> None:
        if self.interrupted is None or self.should_exit:
            return
        if time.monotonic() - self.interrupted < INTERRUPT_GRACE:
            return
        logger.info("Worker %d received SIGINT: draining", os.getpid())
        if self.on_interrupt is not None:
            self.on_interrupt()
        self.should_exit = True

    def _handle_usr1(self, sig: int, frame: FrameType | None) -> None:
        self.reopen_logs = True  # done on the next tick, outside the handler

    def _handle_quit(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit = True
        self.force_exit = True

    # Startup and liveness --------------------------------------------------

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sink in logs.sinks():
            sink.loop = loop  # access lines are written once per event-loop turn
            sink.on_stall = self.send_heartbeat  # alive while the log reader holds us up
        if self.ready_path:
            await self._become_ready(self.ready_path)
        await super().startup(sockets=sockets)
        logs.adopt_app_logging()  # frameworks that configure logging at startup (lifespan)
        if self.started:
            boot_ms = (time.monotonic() - self.boot_started) * 1000
            self.channel.send(Ready(boot_ms=boot_ms))

    async def _become_ready(self, path: str) -> None:
        """--ready-path: the lifespan starts, then the app is asked until it answers 2xx,
        all before uvicorn's startup opens the listeners: a worker that is not ready
        never accepts a connection. A drain meanwhile ends the wait (uvicorn then exits)."""
        lifespan = self.lifespan
        await lifespan.startup()
        if lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        self.lifespan = cast(Any, ready.StartedLifespan(lifespan))

        def report(message: str) -> None:
            self.channel.send(BootFailure(exit_code=EXIT_WORKER_BOOT_ERROR, message=message))

        state = getattr(lifespan, "state", None)
        await ready.wait_ready(
            self.config.app, path, state, stop=lambda: self.should_exit, report=report
        )

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter) or self.drain_requested
        if self.loop_lag:
            self._check_loop_lag(time.perf_counter())  # the clock request times use
        self._check_interrupt()
        if self.reopen_logs:
            self.reopen_logs = False
            logs.reopen()
            logger.info("Worker %d reopened its log files", os.getpid())
        if os.getppid() != self.supervisor_pid and not should_exit:
            logger.warning(
                "Supervisor %d is gone; worker %d exits", self.supervisor_pid, os.getpid()
            )
            self.graceful = min(self.graceful, ORPHAN_DRAIN_SECONDS)
            self.should_exit = should_exit = True
        if counter % HEARTBEAT_EVERY_TICKS == 0:
            now = time.perf_counter()
            close_idle(self.server_state.connections, now, float(self.config.timeout_keep_alive))
            self._close_stalled_connections(now)
            self._check_fd_headroom()
            self.send_heartbeat()
        elif self._reached_max_requests():
            self.send_heartbeat(urgent=True)  # the supervisor starts the replacement now
        return should_exit

    def _reached_max_requests(self) -> bool:
        if self._limit_reported or not self.max_requests:
            return False
        if self.server_state.total_requests < self.max_requests:
            return False
        self._limit_reported = True
        return True

    def _check_loop_lag(self, now: float) -> None:
        """uvicorn ticks every 0.1 s; a late tick means something blocked the loop."""
        last = self._last_tick
        lag = now - last - TICK_SECONDS if last else 0.0
        self._last_tick = now
        if lag < self.loop_lag:
            if self.observer is not None:
                self.observer.recent_slow.clear()
            return
        # The blocking request has usually finished by the time this tick runs:
        # it is among the slow requests since the last tick.
        connections = self.server_state.connections
        blocked_since = last + TICK_SECONDS  # when this tick should have run
        paths = loop_lag_paths(self.observer, connections, blocked_since) if self.observer else []
        logger.warning(
            "Event loop lag: %.0f ms blocked (requests active: %s)",
            lag * 1000,
            ", ".join(paths) or "none",
            extra={"lag_ms": round(lag * 1000, 1), "paths": paths},
        )

    def _check_fd_headroom(self) -> None:
        """Once a second (the protocol also checks each new connection's fd number)."""
        used = _open_fd_count()
        if used is not None and self.fd_ceiling and used >= self.fd_ceiling:
            self.stop_accepting(used)

    def stop_accepting(self, used: int) -> None:
        """Near the open-file limit: leave the shared queue to the siblings and ask to be
        replaced. uvloop, at the limit, accepts and drops connections it cannot serve."""
        if not self.accepting:
            return
        self.accepting = False
        for listening in self.servers:
            listening.close()
        self.ask_recycle("fd-limit")
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        logger.warning(
            "Worker %d is near its open-file limit (%d of %d, %d connections): it stops"
            " accepting and will be replaced; raise the limit (ulimit -n) or look for leaked"
            " files if this repeats",
            os.getpid(),
            used,
            limit,
            len(self.server_state.connections),
        )

    def ask_recycle(self, reason: str) -> None:
        if self.recycle is None:
            self.recycle = reason
            self.send_heartbeat(urgent=True)

    def _close_stalled_connections(self, now: float) -> None:
        """Slowloris: uvicorn has no request-head timeout, so a client trickling
        headers holds a connection forever. Give every connection the keep-alive
        budget to send a complete request head, as an idle one gets to start it."""
        limit = float(self.config.timeout_keep_alive)
        waiting: dict[Any, float] = {}
        stalled = 0
        for connection in self.server_state.connections:
            if not _awaiting_request_head(connection):
                continue
            since = self._awaiting_head_since.get(connection, now)
            if now - since > limit and connection.transport is not None:
                connection.transport.close()
                stalled += 1
            else:
                waiting[connection] = since
        self._awaiting_head_since = waiting
        if stalled:
            logger.info(
                "Closed %d connection(s) that sent no complete request in %.0fs", stalled, limit
            )

    def send_heartbeat(self, urgent: bool = False) -> None:
        """The counts, and whether we drain or want replacing. ``urgent``: news the supervisor
        must act on now (--max-requests reached, a recycle asked): a steady supervisor reads
        heartbeats once a second, so it is nudged with SIGCHLD, which only makes it look at
        its workers."""
        state = self.server_state
        websockets, streams = closing.long_lived(state.connections)
        stats = self.counters.stats() if self.counters is not None else None
        stalls = logs.stall_stats()
        if stalls:
            stats = {**(stats or {}), **stalls}
        self.channel.send(
            Heartbeat(
                requests=state.total_requests,
                in_flight=len(state.tasks),
                connections=len(state.connections),
                draining=self.drain.draining,
                recycle=self.recycle,
                stats=stats,
                websockets=websockets,
                streams=streams,
                websocket_sessions=getattr(self.config.loaded_app, "websockets", 0),
            )
        )
        if urgent:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.supervisor_pid, signal.SIGCHLD)

    # Drain -----------------------------------------------------------------

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain.drain(self, sockets or [])


def _awaiting_request_head(connection: Any) -> bool:
    """An HTTP connection with no keep-alive timer running and no request being
    served: it is between connect (or a response) and a complete request head."""
    if not hasattr(connection, "cycle"):
        return False
    if hasattr(connection, "idle_since"):  # ours: idle ones are close_idle's
        cycle = connection.cycle
        return connection.idle_since == 0.0 and (cycle is None or bool(cycle.response_complete))
    if not hasattr(connection, "timeout_keep_alive_task"):
        return False
    if connection.timeout_keep_alive_task is not None:
        return False
    cycle = connection.cycle
    return cycle is None or bool(cycle.response_complete)


def _fd_ceiling() -> int:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 0 if limit == resource.RLIM_INFINITY else int(limit * FD_STOP_RATIO)


def _open_fd_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno == errno.EMFILE:  # listing needs a descriptor too: we are at the limit
            return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None


def close_idle(connections: Any, now: float, keep_alive: float) -> int:
    """The keep-alive timeout, once a second: close connections idle longer than it
    (never sooner: a client reusing one at the last moment is not raced)."""
    closed = 0
    for connection in list(connections):
        since = getattr(connection, "idle_since", 0.0)
        if since and now - since > keep_alive:
            cycle = connection.cycle
            if (cycle is None or cycle.response_complete) and not connection.pipeline:
                connection.transport.close()
                closed += 1
    return closed
