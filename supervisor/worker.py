"""Runs in the forked child: a clean process, then a uvicorn Server on the inherited sockets.

The child starts from a clean state: default signal dispositions, no running
event loop, no supervisor file descriptors but its own channel and the
listeners, and a parent-death signal so it never outlives the supervisor.
It never returns into the supervisor's code: every path ends in ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import importlib
import logging
import os
import signal
import socket
import sys
import traceback
from typing import Any

import uvicorn
from uvicorn._compat import asyncio_run
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from supervisor import control, logs, middleware
from supervisor.channel import BootFailure, WorkerChannel
from supervisor.config import Config
from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_ERROR, EXIT_OK, EXIT_WORKER_BOOT_ERROR
from supervisor.middleware import Protection
from supervisor.server import CloseConnectionsWhenDraining, DrainState, WorkerServer

logger = logging.getLogger("supervisor.worker")

PR_SET_PDEATHSIG = 1
IDLE_GRACE_CAP = 2.0


class AppLoadFailure(Exception):
    """The app could not be imported; the message is for the supervisor to show once."""


def run_worker(
    config: Config,
    listeners: list[socket.socket],
    channel_sock: socket.socket,
    supervisor_pid: int,
    preloaded_app: Any | None = None,
) -> None:
    """The child's whole life. Never returns."""
    code = EXIT_ERROR
    try:
        _reset_process_state(supervisor_pid, keep=[*listeners, channel_sock])
        logs.configure(config, role="worker")
        code = _serve(config, listeners, WorkerChannel(channel_sock), supervisor_pid, preloaded_app)
    except BaseException:  # the child must never unwind into the supervisor's stack
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not block the exit
                stream.flush()
        os._exit(code)


def _serve(
    config: Config,
    listeners: list[socket.socket],
    channel: WorkerChannel,
    supervisor_pid: int,
    preloaded_app: Any | None,
) -> int:
    try:
        app = preloaded_app if preloaded_app is not None else load_app(config)
    except AppLoadFailure as exc:
        channel.send(BootFailure(exit_code=EXIT_APP_LOAD_ERROR, message=str(exc)))
        return EXIT_APP_LOAD_ERROR

    drain = DrainState()
    hook = getattr(app, "on_drain", None)
    if callable(hook):
        drain.hooks.append(hook)
    uv_config = uvicorn_config(config, app)
    protection = _wrap_app(uv_config, config, drain, supervisor_pid)
    startup_errors = logs.StartupErrorBuffer("uvicorn.error")
    server = WorkerServer(
        uv_config,
        channel=channel,
        drain=drain,
        supervisor_pid=supervisor_pid,
        idle_grace=min(config.timeout_keep_alive, IDLE_GRACE_CAP),
        graceful=config.timeout_graceful,
        protection=protection,
        loop_lag_ms=config.slow_request_ms,
    )
    # A hung worker gets SIGABRT first: faulthandler prints every thread's stack, then it dies.
    faulthandler.enable(all_threads=True)
    try:
        with startup_errors:
            asyncio_run(
                _serve_until_started(server, listeners, startup_errors),
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


def load_app(config: Config) -> Any:
    """Import APP ("module:attr"), calling it first with --factory.

    A missing module or attribute is the user's typo: one line naming the
    part that is wrong. An exception raised while importing is the app's bug:
    its traceback, shown once by the supervisor.
    """
    module_name, _, attrs = config.app.partition(":")
    if not module_name or not attrs:
        raise AppLoadFailure(f'APP must be "module:attribute", got {config.app!r}.')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_parent_or_self(exc.name, module_name):
            raise AppLoadFailure(f'Could not import module "{module_name}".') from exc
        raise AppLoadFailure(_import_traceback(config.app, exc)) from exc
    except BaseException as exc:
        raise AppLoadFailure(_import_traceback(config.app, exc)) from exc
    app: Any = module
    for attr in attrs.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError:
            raise AppLoadFailure(
                f'Attribute "{attrs}" not found in module "{module_name}".'
            ) from None
    if config.factory:
        try:
            app = app()
        except BaseException as exc:
            text = "".join(traceback.format_exception(exc)).rstrip()
            raise AppLoadFailure(f"Error calling the app factory {config.app!r}:\n{text}") from exc
    return app


def _is_parent_or_self(missing: str, module_name: str) -> bool:
    return module_name == missing or module_name.startswith(missing + ".")


def _import_traceback(app: str, exc: BaseException) -> str:
    """The traceback from the app's own frames: importlib's machinery and this
    module say nothing the user can act on, and a SyntaxError keeps its file,
    line and caret."""
    error = traceback.TracebackException.from_exception(exc)
    error.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in error.stack
            if not frame.filename.startswith("<frozen importlib")
            and frame.filename not in (__file__, importlib.__file__)
        ]
    )
    text = "".join(error.format()).rstrip()
    return f"Error importing APP {app!r}:\n{text}"


def uvicorn_config(config: Config, app: Any) -> uvicorn.Config:
    """The uvicorn Config for one worker; proxy headers are applied by us, outermost."""
    return uvicorn.Config(
        app,
        loop=config.loop,
        http=config.http,
        ws=config.ws,
        lifespan=config.lifespan,
        log_config=None,
        log_level=config.log_level,
        access_log=config.access_log,
        proxy_headers=False,
        forwarded_allow_ips=config.forwarded_allow_ips,
        root_path=config.root_path,
        timeout_keep_alive=int(config.timeout_keep_alive) or 1,
        timeout_graceful_shutdown=int(config.timeout_graceful) if config.timeout_graceful else None,
        backlog=config.backlog,
        headers=[(config.instance_header, config.instance_id)] if config.instance_id else None,
        server_header=config.server_header,
        date_header=config.date_header,
        factory=False,
    )


def _wrap_app(
    uv_config: uvicorn.Config, config: Config, drain: DrainState, supervisor_pid: int
) -> Protection | None:
    uv_config.load()
    app = uv_config.loaded_app
    protection: Protection | None = None
    if middleware.wanted(config):
        control_path = control.socket_path(config, supervisor_pid)

        async def metrics_text() -> str:
            return await control.fetch_metrics(control_path)

        app = protection = Protection(app, config, metrics_text)
    app = CloseConnectionsWhenDraining(app, drain)
    if config.proxy_headers:
        app = ProxyHeadersMiddleware(app, trusted_hosts=uv_config.forwarded_allow_ips)
    uv_config.loaded_app = app
    return protection


def _reset_process_state(supervisor_pid: int, keep: list[socket.socket]) -> None:
    """Undo what fork copied from the supervisor."""
    # Python 3.11 does not reset asyncio's running loop in a forked child.
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    # Python itself starts with these ignored (EPIPE becomes an exception).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _die_with_parent(supervisor_pid)
    _close_inherited_fds({s.fileno() for s in keep} | logs.handler_fds())


def _die_with_parent(supervisor_pid: int) -> None:
    # SIGTERM rather than SIGKILL: an orphaned worker still finishes the
    # requests it holds (bounded by ORPHAN_DRAIN_SECONDS), then exits.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat's getppid() check still catches orphaning
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(EXIT_OK)


def _close_inherited_fds(keep: set[int]) -> None:
    keep |= {0, 1, 2}
    try:
        open_fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                continue
