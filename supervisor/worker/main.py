"""Runs in the forked child: a clean process, then a uvicorn Server on the inherited sockets.

It never returns into the supervisor's code: every path ends in ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any, NoReturn

import msgspec
import uvicorn
from uvicorn._compat import asyncio_run

from supervisor import logs
from supervisor.channel import BootFailure, WorkerChannel
from supervisor.config import Config
from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_ERROR, EXIT_OK, EXIT_WORKER_BOOT_ERROR
from supervisor.logs.capture import STDERR_LEVEL, STDOUT_LEVEL, LogStream
from supervisor.worker import abort, assemble, process, tls
from supervisor.worker.drain import DrainState
from supervisor.worker.hook_calls import WorkerHooks
from supervisor.worker.loading import AppLoadFailure, load_app
from supervisor.worker.server import WorkerServer
from supervisor.worker.ws_choice import ws_protocol

logger = logging.getLogger("supervisor.worker")

IDLE_GRACE_CAP = 2.0


class WorkerStart(msgspec.Struct, frozen=True):
    """What the supervisor hands a worker at fork."""

    config: Config
    listeners: list[socket.socket]
    channel: socket.socket
    supervisor_pid: int
    app: Any | None = None  # preloaded (--preload, supervisor.run(app_object))
    max_requests: int = 0  # this worker's jittered limit: it reports reaching it at once
    dump_fd: int = -1  # faulthandler writes a hung worker's stack here
    output_fd: int = -1  # JSON mode: fds 1 and 2 point here
    metrics_fd: int = -1  # the shared area the app's prometheus_client values live in
    hooks: Any = None  # the config file's server hooks (supervisor.arbiter.hooks.Hooks)
    server: Any = None  # the ``server`` and ``worker`` objects the hooks got in pre_fork
    handle: Any = None

    def fds(self) -> set[int]:
        own = {self.channel.fileno(), self.dump_fd, self.output_fd, self.metrics_fd}
        return {sock.fileno() for sock in self.listeners} | own | logs.sink_fds()


def run_worker(start: WorkerStart) -> None:
    """The child's whole life. Never returns."""
    code = EXIT_ERROR
    hooks = WorkerHooks(start.hooks, start.server, start.handle)
    try:
        process.reset(start.supervisor_pid, keep=start.fds() - {-1})
        process.keep_from_children(
            [*(sock.fileno() for sock in start.listeners), start.channel.fileno(), start.dump_fd]
        )
        if start.config.max_memory_hard:
            process.limit_memory(start.config.max_memory_hard)
        _setup_output(start, hooks)
        if start.metrics_fd >= 0:
            _pool_app_metrics(start)
        code = _serve(start, WorkerChannel(start.channel), hooks)
    except BaseException:  # the child must never unwind into the supervisor's stack
        logger.exception("Worker %d crashed", os.getpid())
    finally:
        _exit_process(code)


def _exit_process(code: int) -> NoReturn:
    logging.shutdown()
    with contextlib.suppress(Exception):  # a closed stream must not block the exit
        logs.flush_all()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _aborted(hooks: WorkerHooks) -> NoReturn:
    """SIGABRT reached Python (see worker.abort): gunicorn's worker_abort, then
    worker_exit, then exit 1. Not by unwinding: a hung loop's cleanup could hang too."""
    hooks.worker_abort()
    hooks.worker_exit()
    _exit_process(EXIT_ERROR)


def _pool_app_metrics(start: WorkerStart) -> None:
    # Imported only with metrics on; prometheus_client itself only if the app imports it.
    from supervisor.appmetrics import client, values  # noqa: PLC0415
    from supervisor.system import places  # noqa: PLC0415

    values.install(start.metrics_fd)
    c = start.config
    client.enable(
        places.control_socket(c.control_socket, c.pid, c.bind, c.uds, start.supervisor_pid)
    )


def _setup_output(start: WorkerStart, hooks: WorkerHooks) -> None:
    logs.after_fork()
    if start.output_fd >= 0:
        process.capture_output(start.output_fd)
        sys.stdout = LogStream("stdout", STDOUT_LEVEL, 1)
        sys.stderr = LogStream("stderr", STDERR_LEVEL, 2)
    logging.captureWarnings(True)
    # A hung worker gets SIGABRT first: faulthandler writes every thread's stack to a
    # pipe the supervisor reads when the worker is gone, then it is killed.
    on_abort = (lambda: _aborted(hooks)) if hooks.has("worker_abort") else None
    abort.install(start.dump_fd, on_abort)


def _serve(start: WorkerStart, channel: WorkerChannel, hooks: WorkerHooks) -> int:
    try:
        return _serve_app(start, channel, hooks)
    finally:
        hooks.worker_exit()  # in the worker, on its way out (gunicorn's moment)


def _serve_app(start: WorkerStart, channel: WorkerChannel, hooks: WorkerHooks) -> int:
    config = start.config
    try:
        app = start.app if start.app is not None else load_app(config)
    except AppLoadFailure as exc:
        channel.send(BootFailure(exit_code=EXIT_APP_LOAD_ERROR, message=str(exc)))
        return EXIT_APP_LOAD_ERROR
    logs.adopt_app_logging()  # the app may have run dictConfig at import (Django does)

    drain = DrainState()  # the app hears of a drain through the notice (supervisor.notice)
    uv_config = uvicorn_config(config, app)
    observed = assemble.observe(uv_config, config, drain, start.supervisor_pid)
    if start.hooks is not None:
        context = tls.custom_context(config, start.hooks.get("ssl_context"))
        uv_config.ssl = context or uv_config.ssl
    startup_errors = logs.StartupErrorBuffer("uvicorn.error")
    server = WorkerServer(
        uv_config,
        channel=channel,
        drain=drain,
        supervisor_pid=start.supervisor_pid,
        idle_grace=min(config.timeout_keep_alive, IDLE_GRACE_CAP),
        graceful=config.timeout_graceful,
        observer=observed.observer,
        counters=observed.counters,
        max_requests=start.max_requests,
        loop_lag_ms=config.slow_request_ms,
        ready_path=config.ready_path,
    )
    observed.bind(server.server_state)
    observed.observer.fd_ceiling = server.fd_ceiling
    observed.observer.on_fd_pressure = server.stop_accepting
    observed.observer.on_memory_error = lambda: server.ask_recycle("memory-hard")
    server.on_interrupt = hooks.worker_int
    hooks.post_worker_init()  # the app is loaded, privileges are dropped: before serving
    try:
        with startup_errors:
            asyncio_run(
                _serve_until_started(server, start.listeners, startup_errors),
                loop_factory=uv_config.get_loop_factory(),
            )
    except SystemExit as exc:
        if not server.started:
            message = startup_errors.text() or "Application startup failed."
            channel.send(BootFailure(exit_code=EXIT_WORKER_BOOT_ERROR, message=message))
            return EXIT_WORKER_BOOT_ERROR
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if not server.started:
        channel.send(BootFailure(exit_code=EXIT_WORKER_BOOT_ERROR, message=startup_errors.text()))
        return EXIT_WORKER_BOOT_ERROR
    return EXIT_OK if server.drain_clean else EXIT_ERROR


async def _serve_until_started(
    server: WorkerServer, listeners: list[socket.socket], startup_errors: logs.StartupErrorBuffer
) -> None:
    async def release_when_started() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.01)
        if server.started:
            startup_errors.release()

    watcher = asyncio.ensure_future(release_when_started())
    try:
        await server.serve(sockets=listeners)
    finally:
        watcher.cancel()


def uvicorn_config(config: Config, app: Any) -> uvicorn.Config:
    """The uvicorn Config for one worker; proxy headers and observation are added by us."""
    return uvicorn.Config(
        app,
        loop=config.loop,
        http=config.http,
        ws=ws_protocol(config.ws),  # type: ignore[arg-type] # a callable, like a class
        lifespan=config.lifespan,
        log_config=None,
        log_level=config.log_level,
        # Access lines are ours (supervisor.worker.protocol); False here would make uvicorn
        # cut "uvicorn.access" off from the handlers of a --log-config.
        access_log=True,
        proxy_headers=False,
        forwarded_allow_ips=config.forwarded_allow_ips,
        root_path=config.root_path,
        timeout_keep_alive=int(config.timeout_keep_alive) or 1,
        timeout_graceful_shutdown=int(config.timeout_graceful) if config.timeout_graceful else None,
        backlog=config.backlog,
        headers=_headers(config),
        ws_max_size=config.ws_max_size,
        ws_max_queue=config.ws_max_queue,
        ws_ping_interval=config.ws_ping_interval,
        ws_ping_timeout=config.ws_ping_timeout,
        ws_per_message_deflate=config.ws_per_message_deflate,
        interface=config.interface,
        h11_max_incomplete_event_size=config.h11_max_incomplete_event_size,
        reset_contextvars=config.reset_contextvars,
        http2=config.http2,
        server_header=config.server_header,
        date_header=config.date_header,
        factory=False,
        **tls.uvicorn_kwargs(config),
    )


def _headers(config: Config) -> list[tuple[str, str]] | None:
    """--header "Name: Value" (uvicorn's), and the instance header."""
    headers = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in config.headers)]
    if config.instance_id:
        headers.append((config.instance_header, config.instance_id))
    return headers or None


__all__ = ["AppLoadFailure", "WorkerStart", "load_app", "run_worker", "uvicorn_config"]
