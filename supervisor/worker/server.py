"""The worker's uvicorn Server: readiness, event-loop heartbeats and a zero-drop drain.

uvicorn's own shutdown closes idle keep-alive connections at once, racing
with clients that are about to reuse them: that race is where Gunicorn and
``uvicorn --workers`` lose requests on every restart. Here a draining worker
stops accepting, answers the next request on each open connection with
``Connection: close``, closes connections that stay idle only after a grace
window, lets in-flight requests and streams finish, and only then exits.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn

from supervisor import logs
from supervisor.channel import Heartbeat, Ready, WorkerChannel
from supervisor.worker.counters import Counters
from supervisor.worker.drain import DrainState
from supervisor.worker.observe import Observer, close_idle, loop_lag_paths

logger = logging.getLogger("supervisor.worker")

# uvicorn ticks every 0.1 s; a heartbeat goes once a second (liveness is judged in
# seconds), and at once when something the supervisor acts on changes.
HEARTBEAT_EVERY_TICKS = 10
ORPHAN_DRAIN_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05
TICK_SECONDS = 0.1  # uvicorn's main loop
FD_WARN_RATIO = 0.9
FD_CLEAR_RATIO = 0.75


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
    ) -> None:
        super().__init__(config)
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
        self._fd_warned = False
        self.boot_started = time.monotonic()
        self.drain_clean = True
        self._awaiting_head_since: dict[Any, float] = {}

    # Signals ---------------------------------------------------------------

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The supervisor coordinates shutdown: TERM drains, QUIT is fast, and a
        # terminal's Ctrl-C (sent to the whole process group) is left to it.
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle_term),
            signal.SIGQUIT: signal.signal(signal.SIGQUIT, self._handle_quit),
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGUSR1: signal.signal(signal.SIGUSR1, self._handle_usr1),
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle_term(self, sig: int, frame: FrameType | None) -> None:
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
        await super().startup(sockets=sockets)
        logs.adopt_app_logging()  # frameworks that configure logging at startup (lifespan)
        if self.started:
            boot_ms = (time.monotonic() - self.boot_started) * 1000
            self.channel.send(Ready(boot_ms=boot_ms))

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if self.loop_lag:
            self._check_loop_lag(time.monotonic())
        if self.reopen_logs:
            self.reopen_logs = False
            logs.reopen()
            logger.info("Worker %d reopened its log files", os.getpid())
        if os.getppid() != self.supervisor_pid and not self.should_exit:
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
            self.send_heartbeat()  # the supervisor starts the replacement now, not in a second
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
        lag = now - self._last_tick - TICK_SECONDS if self._last_tick else 0.0
        self._last_tick = now
        if lag < self.loop_lag:
            if self.observer is not None:
                self.observer.recent_slow.clear()
            return
        # The blocking request has usually finished by the time this tick runs:
        # it is among the slow requests since the last tick.
        paths = (
            loop_lag_paths(self.observer, self.server_state.connections) if self.observer else []
        )
        logger.warning(
            "Event loop lag: %.0f ms blocked (requests active: %s)",
            lag * 1000,
            ", ".join(paths) or "none",
            extra={"lag_ms": round(lag * 1000, 1), "paths": paths},
        )

    def _check_fd_headroom(self) -> None:
        """At the open-file limit the event loop cannot accept (EMFILE) and pauses,
        silently; new connections wait in the shared backlog. Say so, once."""
        used = _open_fd_count()
        if used is None:
            return
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            return
        if not self._fd_warned and used >= limit * FD_WARN_RATIO:
            self._fd_warned = True
            logger.warning(
                "Worker %d is at its open-file limit (%d of %d, %d connections): new"
                " connections wait in the backlog (Too many open files); raise the limit"
                " (ulimit -n) or lower --max-concurrent / --backlog",
                os.getpid(),
                used,
                limit,
                len(self.server_state.connections),
            )
        elif self._fd_warned and used < limit * FD_CLEAR_RATIO:
            self._fd_warned = False
            logger.info(
                "Worker %d has open files to spare again (%d of %d)", os.getpid(), used, limit
            )

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

    def send_heartbeat(self) -> None:
        state = self.server_state
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
                stats=stats,
            )
        )

    # Drain -----------------------------------------------------------------

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        state = self.server_state
        self.drain.draining = True
        logger.info(
            "Worker %d draining: %d connection(s), %d request(s) in flight",
            os.getpid(),
            len(state.connections),
            len(state.tasks),
        )
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._run_drain_hooks()
        self.send_heartbeat()

        graceful = self.graceful
        deadline = loop.time() + graceful
        idle_close_at = loop.time() + min(self.idle_grace, graceful)
        for connection in list(state.connections):
            if not _is_idle(connection):
                connection.shutdown()  # finish the current response, then close
        idle_closed = False
        while (state.connections or state.tasks) and not self.force_exit:
            now = loop.time()
            if now >= deadline:
                break
            if not idle_closed and now >= idle_close_at:
                idle_closed = True
                for connection in list(state.connections):
                    if _is_idle(connection):
                        connection.shutdown()
            await asyncio.sleep(DRAIN_POLL_SECONDS)

        if state.tasks and not self.force_exit:
            self.drain_clean = False
            logger.error(
                "Worker %d: graceful timeout (%.1fs) exceeded; cancelling %d request(s)",
                os.getpid(),
                graceful,
                len(state.tasks),
            )
            for task in list(state.tasks):
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            await asyncio.sleep(0)
        for connection in list(state.connections):
            connection.shutdown()
        if not self.force_exit:
            await self.lifespan.shutdown()
        self.send_heartbeat()  # final counts, so the supervisor's totals never lose requests

    async def _run_drain_hooks(self) -> None:
        for hook in self.drain.hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout=1.0)
            except Exception:
                logger.exception("The application's on_drain hook failed")


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


def _open_fd_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno == errno.EMFILE:  # listing needs a descriptor too: we are at the limit
            return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None


def _is_idle(connection: Any) -> bool:
    """An HTTP connection between requests (websockets and others are never idle)."""
    if not hasattr(connection, "cycle"):
        return False
    cycle = connection.cycle
    return cycle is None or bool(cycle.response_complete)
