"""From a validated Config to a running supervisor: environment, listeners, preload, loop."""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import msgspec

from supervisor import logs
from supervisor._version import __version__
from supervisor.arbiter import handover, operations, signals, upgrade
from supervisor.arbiter.arbiter import Arbiter
from supervisor.arbiter.hooks import Hooks, ServerHandle
from supervisor.config import Config, format_size, replace
from supervisor.endpoints import control, metrics
from supervisor.errors import AppLoadError, ConfigError, SupervisorError
from supervisor.pool import PoolSnapshot
from supervisor.system import (
    capacity,
    cgroups,
    ownership,
    pidfile,
    places,
    privileges,
    sockets,
    titles,
    workdir,
)
from supervisor.system import watch as reload
from supervisor.worker import http_choice, tls

if TYPE_CHECKING:
    from supervisor.config.cli import Invocation

logger = logging.getLogger("supervisor")


class EnvFile:
    """--env-file: loaded before forking, re-read on SIGHUP.

    Variables already in the real environment at start win over the file,
    as with uvicorn; variables that came from the file follow its changes.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.owned: set[str] = set()

    def load(self) -> None:
        if not self.path:
            return
        from dotenv import dotenv_values  # noqa: PLC0415 - a uvicorn[standard] dependency

        if not Path(self.path).is_file():
            raise ConfigError(f"--env-file {self.path}: no such file.")
        try:
            values = dotenv_values(self.path)
        except OSError as exc:
            raise ConfigError(f"--env-file {self.path}: {exc.strerror or exc}.") from exc
        for key, value in values.items():
            if value is None or (key in os.environ and key not in self.owned):
                continue
            os.environ[key] = value
            self.owned.add(key)


def preload_app(config: Config) -> Any:
    from supervisor.worker import AppLoadFailure, load_app  # noqa: PLC0415

    try:
        return load_app(config)
    except AppLoadFailure as exc:
        raise AppLoadError(str(exc)) from exc


def open_listeners(config: Config, owner: privileges.Identity | None = None) -> list[socket.socket]:
    specs = sockets.bind_specs(config.bind, config.host, config.port, config.uds, dict(os.environ))
    opened: list[socket.socket] = []
    try:
        for spec in specs:
            opened.append(
                sockets.open_listener(
                    spec,
                    backlog=config.backlog,
                    listen=not config.reuse_port,
                    # A port someone else listens on is refused, unless sharing
                    # it is what --reuse-port asked for.
                    exclusive=not config.reuse_port,
                    owner=owner,
                    umask=config.umask,
                )
            )
    except SupervisorError:
        for sock in opened:
            sock.close()
        raise
    return opened


def check_workers(config: Config) -> None:
    """--workers against this host's CPUs and memory: refuse the absurd, warn when high."""
    verdict = capacity.judge_here(
        config.workers, allowed=config.allow_many_workers, subject=f"--workers {config.workers}"
    )
    if verdict.refuse:
        raise ConfigError(str(verdict.message))
    if verdict.message:
        logger.warning("%s", verdict.message)


def _log_start(
    config: Config, listeners: list[socket.socket], metrics_listener: socket.socket | None
) -> None:
    logger.info("Starting supervisor %s (pid %d) for %s", __version__, os.getpid(), config.app)
    for sock in listeners:
        where = sockets.describe(sock)
        if tls.enabled(config):  # the same socket; every worker wraps it in TLS
            where = where.replace("http://", "https://", 1) + " (TLS)"
        logger.info("Listening at %s", where)
    if metrics_listener is not None:
        # The bound address, so ":0" in --metrics-bind shows the port it got.
        logger.info("Metrics at %s/metrics", sockets.describe(metrics_listener))
    limits = []
    if config.max_requests:
        limits.append(f"max-requests {config.max_requests}+{config.max_requests_jitter}")
    if config.max_memory:
        limits.append(f"max-memory {format_size(config.max_memory)}")
    if config.max_lifetime:
        limits.append(f"max-lifetime {config.max_lifetime:.0f}s")
    logger.info("Using %d worker(s)%s", config.workers, f" ({', '.join(limits)})" if limits else "")
    cpus, memory = cgroups.cpu_limit(), cgroups.memory_limit()
    if cpus is not None or memory is not None:
        logger.info(
            "Container limits: %s (%d usable CPUs)",
            cgroups.describe_limits(cpus, memory),
            cgroups.usable_cpus(),
        )
    if config.reload:
        for warning in reload.warnings_for(config):
            logger.warning("%s", warning)
    if config.reuse_port:
        if sockets.ensure_tcp_migrate_req():
            logger.info("--reuse-port: one listening socket per worker; net.ipv4.tcp_migrate_req=1")
        else:
            logger.warning(
                "--reuse-port: net.ipv4.tcp_migrate_req is off and cannot be set here, so a"
                " draining worker's queued connections are reset; set the sysctl to 1 or drop"
                " --reuse-port to keep restarts lossless"
            )


def _install_logging(config: Config, *, text_instance: bool) -> None:
    """Logging for the supervisor (workers inherit it); a bad format or log config is exit 2."""
    if config.access_log_format:
        from supervisor.worker.access import check_format  # noqa: PLC0415

        check_format(config.access_log_format)
    logs.install(
        level=config.log_level,
        json_format=config.log_format == "json",
        instance=config.instance_id or "",
        text_instance=text_instance,
        log_file=config.log_file,
        access_file=config.access_log_file,
        log_config=config.log_config_dict or config.log_config,
    )
    logging.captureWarnings(True)


def prepare(config: Config) -> Config:
    """Settings that depend on this process: the instance id defaults to hostname-pid."""
    if not config.instance_id:
        config = replace(config, instance_id=f"{socket.gethostname()}-{os.getpid()}")
    # Workers inherit it: an app that names itself (logs, its own header) uses the same id.
    os.environ["SUPERVISOR_INSTANCE_ID"] = config.instance_id or ""
    return config


class Started(msgspec.Struct):
    """What the start-up made, before the first fork."""

    env_file: EnvFile
    listeners: list[socket.socket] = msgspec.field(default_factory=list)
    metrics_listener: socket.socket | None = None
    pid_file: pidfile.PidFile | None = None
    preloaded: Any | None = None
    successor: upgrade.Successor | None = None  # started by SIGUSR2 of another supervisor
    handed_over: bool = False  # we upgraded: the listeners' files are the successor's now
    default_instance: bool = True

    def sockets(self) -> list[socket.socket]:
        return [*self.listeners, *([self.metrics_listener] if self.metrics_listener else [])]


def run_config(
    config: Config, *, invocation: Invocation | None = None, app: Any | None = None
) -> int:
    """Run the supervisor until it stops; the process exit code."""
    # A name the user chose goes on every text line too; the default hostname-pid
    # would only repeat the pid that each line already has.
    text_instance = bool(config.instance_id)
    config = prepare(config)
    try:
        handoff = upgrade.take_handoff(os.environ)  # we were started by a SIGUSR2
        workdir.enter(config)
        _install_logging(config, text_instance=text_instance)
    except ConfigError as exc:
        sys.stderr.write(f"supervisor: error: {exc}\n")
        return exc.exit_code
    for warning in invocation.warnings if invocation else ():
        logger.warning("%s", warning)
    for note in invocation.notes if invocation else ():
        logger.info("%s", note)
    started = Started(EnvFile(config.env_file), default_instance=not text_instance)
    started.successor = handover.successor_for(handoff, config)
    try:
        _start(config, started, app)
    except BaseException as exc:  # whatever ends the start: leave nothing behind
        for sock in started.sockets():
            sock.close()
        _cleanup(config, started)
        if not isinstance(exc, SupervisorError):
            raise
        logger.error("%s", exc)
        return exc.exit_code
    _log_start(config, started.listeners, started.metrics_listener)
    if handoff is not None:
        logger.info("Upgrade: taking over from supervisor %d", handoff.old_pid)
    titles.set_title("master", config)
    try:
        code = _serve(config, started, invocation, app)
    finally:
        _cleanup(config, started)
    logger.info("Supervisor %d stopped (exit code %d)", os.getpid(), code)
    return code


def _start(config: Config, started: Started, app: Any | None) -> None:
    check_workers(config)
    successor = started.successor
    tls.check(config)  # an unusable certificate: one line, before any socket or fork
    http_choice.check(config)
    identity = privileges.resolve(config.user, config.group)  # an unknown user: one line
    # Before any socket: a second supervisor on the same --pid says so, not "port in use".
    # A USR2 successor takes the pid file over once it serves (upgrade.Successor).
    started.pid_file = pidfile.acquire(config.pid) if config.pid and not successor else None
    if successor is None:  # else the old supervisor listens there until we serve
        control.check_chosen_place(config)
    started.env_file.load()
    app_dir = str(Path(config.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    if successor is not None:
        started.listeners = successor.listeners()
        for path in places.listener_paths(config.bind, config.uds):
            ownership.claim(path)  # ours to remove at exit from now on
        started.metrics_listener = successor.metrics_listener()
    else:
        started.listeners = open_listeners(config, identity)
    if config.metrics_bind and started.metrics_listener is None:
        started.metrics_listener = metrics.open_metrics_listener(config.metrics_bind)
    started.preloaded = app if app is not None else preload_app(config) if config.preload else None
    if started.preloaded is not None:
        logs.adopt_app_logging()  # its import may have run dictConfig


def _serve(config: Config, started: Started, invocation: Invocation | None, app: Any | None) -> int:
    hooks = Hooks(invocation.hooks if invocation else None)
    server = ServerHandle(config)
    hooks.call("nworkers_changed", server, config.workers, None)  # gunicorn's first hook
    hooks.call("on_starting", server)
    gunicorn_file = bool(invocation and invocation.config_file)

    on_hup = handover.HupHandler(started, hooks, invocation is not None, gunicorn_file)
    arbiter = Arbiter(
        config,
        started.listeners,
        preloaded_app=started.preloaded,
        hooks=hooks,
        server=server,
        on_hup=on_hup,
    )
    on_hup.arbiter = arbiter
    link = handover.link_systemd(arbiter, started.successor)
    handover.set_up_upgrades(
        config, arbiter, started, link, cli=invocation is not None and app is None
    )
    arbiter.start()
    return anyio.run(arbiter.run, *_sources(config, arbiter, started))


class _Commands:
    """What the control socket may do, wired to the arbiter (endpoints never see it)."""

    def __init__(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter

    def snapshot(self) -> PoolSnapshot:
        return self._arbiter.snapshot()

    def metrics_text(self) -> str:
        return metrics.render(self._arbiter.snapshot(), self._arbiter.app_metrics())

    def scale(self, workers: int) -> str | None:
        refused = operations.set_target(self._arbiter, workers)
        self._arbiter.reconcile()
        return refused

    def reload(self) -> int | None:
        replaced = operations.reload(self._arbiter, cause="Control: reload requested")
        self._arbiter.reconcile()
        return replaced

    def stop(self, fast: bool) -> str:
        how = operations.stop(self._arbiter, fast=fast, cause="Control: stop requested")
        self._arbiter.reconcile()
        return how


def _sources(
    config: Config, arbiter: Arbiter, started: Started
) -> list[Callable[[], Awaitable[None]]]:
    """The event sources beside the tick: signals, --reload, the two endpoints."""
    sources: list[Callable[[], Awaitable[None]]] = [
        functools.partial(signals.watch, functools.partial(operations.on_signal, arbiter)),
    ]
    if config.reload:

        def on_change(paths: list[str]) -> None:
            operations.source_changed(arbiter, paths)

        sources.append(functools.partial(reload.watch, config, on_change))
    metrics_listener = started.metrics_listener
    place = control.socket_path(config, os.getpid())
    if started.successor is not None:
        place = started.successor.control_place()
    control_sock = control.open_control_socket(place)
    if control_sock is not None:
        sources.append(functools.partial(control.serve, control_sock, _Commands(arbiter)))
    if metrics_listener is not None:

        def body(accept: str) -> tuple[bytes, str]:
            return metrics.encode(arbiter.snapshot(), arbiter.app_metrics(), accept)

        sources.append(functools.partial(metrics.serve, metrics_listener, body))
    return sources


def _cleanup(config: Config, started: Started) -> None:
    """Remove our files, each only if it is still ours (another server may own it now)."""
    own: list[str | Path] = [control.socket_path(config, os.getpid())]
    if not started.handed_over:  # else the successor serves on the same socket files
        own += places.listener_paths(config.bind, config.uds)
    if started.successor is not None:
        own += started.successor.leftovers()
    for path in [str(item) for item in own]:
        ownership.release(path)
    pid_file = started.pid_file
    if pid_file is not None:
        pid_file.release()


def exit_process(code: int) -> NoReturn:
    """Exit with ``code`` now, even if a non-daemon thread (a preloaded app's) still runs.

    ``sys.exit`` would wait for such threads forever after the supervisor has
    said it stopped; flush the logs and leave without them instead.
    """
    left = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
    if not left:
        sys.exit(code)
    logger.warning(
        "Exiting although %d non-daemon thread(s) still run: %s",
        len(left),
        ", ".join(thread.name for thread in left),
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue
    os._exit(code)
