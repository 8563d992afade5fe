"""Forking a worker: the listeners it gets, its pipes, the signal mask across fork.

The first workers are forked before the supervisor's event loop exists, so
they boot while it sets itself up; every worker inherits the worker stack
(uvicorn, its HTTP protocol, uvloop) imported once here, copy-on-write, so a
replacement serves within tens of milliseconds of a crash. The WebSocket
implementation is not part of it: a worker imports it at its first upgrade
(:mod:`supervisor.worker.ws_choice`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor.arbiter import policy
from supervisor.arbiter.hooks import Hooks, ServerHandle, WorkerHandle
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.channel import make_pair
from supervisor.config import Config
from supervisor.logs import capture
from supervisor.system import privileges, sockets, titles

if TYPE_CHECKING:
    from supervisor.appmetrics.harvest import Harvest

logger = logging.getLogger("supervisor")

WORKER_MODULES = (
    "supervisor.worker.main",
    "supervisor.worker.assemble",
    "supervisor.worker.protocol",
    "uvicorn.config",
    "uvicorn.middleware.proxy_headers",
)
# Held across fork: until the child has set its own handlers, a signal meant for
# it (a drain during boot) would run the supervisor's and be lost.
HELD_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class SpawnError(Exception):
    """fork() or a --reuse-port listener failed; the message says why."""


class Spawner:
    """Forks workers of the pool: ``spawn(generation)`` -> the new worker's record."""

    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        *,
        json_logs: bool,
        hooks: Hooks,
        server: ServerHandle,
        app: Callable[[], Any | None],
        harvest: Harvest | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.json_logs = json_logs
        self.hooks = hooks
        self.server = server
        self.app = app  # what a new worker serves: the preloaded app, an error page, or None
        self.supervisor_pid = os.getpid()
        self.rng = random.Random()
        self.spawned = 0  # every fork so far: a hook's worker.age
        self.harvest = harvest
        # --user/--group: resolved (and refused if unknown) by the runner before binding.
        self.identity = privileges.resolve(config.user, config.group)

    def warm_up(self) -> None:
        """Import the worker's stack before forking (see the module docstring)."""
        for name in WORKER_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        from uvicorn import config as uv  # noqa: PLC0415 - imported just above

        chosen = (
            uv.HTTP_PROTOCOLS.get(self.config.http),
            uv.LIFESPAN.get(self.config.lifespan),
            uv.LOOP_FACTORIES.get(self.config.loop),
        )
        modules = [target.partition(":")[0] for target in chosen if target]
        if self.config.loop in ("auto", "uvloop"):
            modules.append("uvloop")  # uvicorn's loop factories import it only when called
        for name in modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        # Everything imported so far (and a --preload app) is never collected: frozen,
        # a worker's garbage collector does not write to those objects, so their
        # pages stay shared with the supervisor instead of being copied in every worker.
        gc.freeze()

    def spawn(self, generation: int) -> tuple[WorkerRecord, WorkerHandle]:
        """Fork one worker: its record, and the ``worker`` object its hooks got."""
        config = self.config
        self.spawned += 1
        handle = WorkerHandle(self.spawned, generation, config)
        limits = self._limits()
        try:
            listeners = self._listeners()
        except OSError as exc:
            raise SpawnError(f"Cannot open a --reuse-port listener ({exc})") from exc
        own = [sock for sock in listeners if sock not in self.listeners]
        metrics_fd = self._metrics_area()
        parent_end, child_end = make_pair()
        dump_r, dump_w = os.pipe()
        output_r, output_w = os.pipe() if self.json_logs else (-1, -1)
        self.hooks.call("pre_fork", self.server, handle)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for sock in (parent_end, child_end, *own):
                sock.close()
            _close_fds(dump_r, dump_w, output_r, output_w, metrics_fd)
            raise SpawnError(f"Cannot fork a worker ({exc.strerror or exc})") from exc
        if pid == 0:  # pragma: no cover - runs in the child, measured by the e2e tests
            parent_end.close()
            self._become(handle, listeners, child_end, limits, (dump_w, output_w, metrics_fd))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        _close_fds(dump_w, output_w)
        for sock in own:  # the worker's own accept queue dies with the worker
            sock.close()
        handle.pid = pid
        if self.harvest is not None:
            self.harvest.adopt(pid, metrics_fd)
        worker = _record(
            pid, generation, limits=limits, channel=parent_end, dump_fd=dump_r, output_fd=output_r
        )
        return worker, handle

    def _limits(self) -> policy.WorkerLimits:
        c = self.config
        return policy.worker_limits(
            c.max_requests, c.max_requests_jitter, c.max_lifetime, c.lifetime_jitter, self.rng
        )

    def _metrics_area(self) -> int:
        try:
            return self.harvest.open() if self.harvest is not None else -1
        except OSError as exc:
            raise SpawnError(f"Cannot make a worker's metrics area ({exc})") from exc

    def _become(  # pragma: no cover - runs in the child; never returns
        self,
        handle: WorkerHandle,
        listeners: list[socket.socket],
        channel: socket.socket,
        limits: policy.WorkerLimits,
        fds: tuple[int, int, int],
    ) -> None:
        """In the new child: post_fork (as root), the privilege drop, then the worker."""
        from supervisor.worker import WorkerStart  # noqa: PLC0415 - warmed up

        handle.pid = os.getpid()
        titles.set_title("worker", self.config, handle.age)
        self.hooks.call("post_fork", self.server, handle)
        if self.identity is not None:  # after post_fork (still root), before the app
            privileges.drop(self.identity)
        start = WorkerStart(
            self.config,
            listeners,
            channel,
            self.supervisor_pid,
            self.app(),
            max_requests=limits.max_requests,
            dump_fd=fds[0],
            output_fd=fds[1],
            metrics_fd=fds[2],
            hooks=self.hooks,
            server=self.server,
            handle=handle,
        )
        _become_worker(start)

    def _listeners(self) -> list[socket.socket]:
        if not self.config.reuse_port:
            return self.listeners
        return sockets.per_worker_listeners(self.listeners, self.config.backlog)


def _record(
    pid: int,
    generation: int,
    *,
    limits: policy.WorkerLimits,
    channel: socket.socket,
    dump_fd: int,
    output_fd: int,
) -> WorkerRecord:
    """The supervisor's record of a worker it just forked (it holds the pipes' read ends)."""
    now = time.monotonic()
    os.set_blocking(dump_fd, False)
    worker = WorkerRecord(
        pid=pid,
        generation=generation,
        started_at=now,
        channel=channel,
        max_requests=limits.max_requests,
        max_lifetime=limits.max_lifetime,
        last_beat=now,
        dump_fd=dump_fd,
    )
    if output_fd >= 0:
        os.set_blocking(output_fd, False)
        worker.output = capture.PipeLines(output_fd)
    return worker


def _become_worker(start: Any) -> None:  # pragma: no cover - in the child; never returns
    from supervisor.worker import run_worker  # noqa: PLC0415 - warmed up

    run_worker(start)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
