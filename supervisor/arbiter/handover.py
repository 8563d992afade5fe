"""The runner's wiring for life under systemd on a VM: sd_notify, SIGUSR2 upgrades, and
SIGHUP's re-read configuration.

The decisions live in :mod:`supervisor.arbiter.systemd` (what to tell systemd)
and :mod:`supervisor.arbiter.upgrade` (the hand-over); this only connects them
to the arbiter's tick, its stop and its child exits.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

from supervisor import logs
from supervisor.arbiter import operations, upgrade
from supervisor.arbiter.arbiter import Arbiter
from supervisor.arbiter.hand import DRAIN_MARGIN
from supervisor.arbiter.hooks import Hooks, ServerHandle
from supervisor.arbiter.systemd import SystemdLink
from supervisor.config import Config
from supervisor.config.reread import Plan, plan, reread_config
from supervisor.endpoints import control
from supervisor.errors import ConfigError
from supervisor.logs.handlers import LEVELS
from supervisor.system import ownership, pidfile, sdnotify

logger = logging.getLogger("supervisor")


class EnvFileLike(Protocol):
    owned: set[str]

    def load(self) -> None: ...


class Started(Protocol):
    """What the runner started (runner.Started)."""

    @property
    def env_file(self) -> EnvFileLike: ...

    listeners: list[socket.socket]
    metrics_listener: socket.socket | None
    pid_file: pidfile.PidFile | None
    successor: upgrade.Successor | None
    handed_over: bool
    default_instance: bool


def successor_for(handoff: upgrade.Handoff | None, config: Config) -> upgrade.Successor | None:
    """When a SIGUSR2 started us: what the new supervisor takes over, once it serves."""
    if handoff is None:
        return None
    place = control.socket_path(config, os.getpid())
    return upgrade.Successor(handoff, pid_path=config.pid, control_path=place)


def link_systemd(arbiter: Arbiter, successor: upgrade.Successor | None) -> SystemdLink:
    """sd_notify from the loop's tick (a no-op without $NOTIFY_SOCKET)."""
    if successor is not None and os.environ.get(sdnotify.WATCHDOG_PID) == str(
        successor.handoff.old_pid
    ):
        os.environ[sdnotify.WATCHDOG_PID] = str(os.getpid())  # the watchdog follows MAINPID
    # A successor's READY=1 is the old supervisor's, sent with MAINPID= (systemd
    # ignores us until then).
    budget = arbiter.config.timeout_boot + arbiter.config.timeout_graceful + DRAIN_MARGIN
    link = SystemdLink(successor=successor is not None, budget=budget)

    def tick(now: float, stalled: bool) -> None:
        stopping = arbiter.stop_state is not None
        link.tick(arbiter.pool, stopping=stopping, healthy=not stalled, now=now)

    arbiter.loop.extensions.on_tick.append(tick)
    watchdog = link.notifier.watchdog_interval
    if watchdog is not None:
        # A ping is sent on the first tick after ``watchdog`` seconds: ticks this
        # often keep every ping well inside WATCHDOG_USEC (twice ``watchdog``).
        arbiter.loop.extensions.longest_tick = watchdog / 2
    arbiter.loop.extensions.on_stop.append(lambda: link.stopped(arbiter.pool))
    return link


def set_up_upgrades(
    config: Config, arbiter: Arbiter, started: Started, link: SystemdLink, *, cli: bool
) -> None:
    """SIGUSR2 (this supervisor as the old one) and, when we are the new one, the takeover."""
    default_instance, env_file = started.default_instance, started.env_file

    def environ() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in env_file.owned}
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)  # the listeners travel in the hand-off
        if default_instance:
            env.pop("SUPERVISOR_INSTANCE_ID", None)  # hostname-<new pid>
        return env

    def handed_over(new_pid: int) -> None:
        started.handed_over = True
        # `status` reaches the new one from now on (ours may be its path already).
        ownership.release(control.socket_path(config, os.getpid()))
        link.hand_over(new_pid, f"upgraded: supervisor {new_pid} serves")
        operations.stop(arbiter, fast=False, cause=f"Upgrade: supervisor {new_pid} serves")

    upgrader = upgrade.Upgrader(
        command=upgrade.command_line(sys.orig_argv, sys.executable) if cli else None,
        environ=environ,
        listeners=started.listeners,
        metrics=started.metrics_listener,
        timeout_boot=config.timeout_boot,
        stopping=lambda: arbiter.stop_state is not None,
        handed_over=handed_over,
        began=lambda: link.upgrade_started(arbiter.pool),
        gave_up=lambda reason: link.upgrade_failed(arbiter.pool, reason),
        pre_exec=lambda: pre_exec_call(arbiter.hooks, arbiter.server),
    )
    successor = started.successor
    if successor is not None:
        upgrader.taking_over = successor.handoff.old_pid

    def tick(now: float, stalled: bool) -> None:
        if successor is not None and not successor.done and arbiter.pool.served:
            successor.announce()
            started.pid_file = successor.pid_file
            upgrader.taking_over = None
            link.silent = False  # the old one is saying MAINPID= for us
        upgrader.tick(now)

    arbiter.loop.extensions.on_tick.append(tick)
    arbiter.loop.extensions.child_exited.append(upgrader.on_exit)
    arbiter.loop.extensions.on_stop.append(upgrader.abandon)
    arbiter.loop.extensions.upgrade = upgrader.request


def pre_exec_call(hooks: Hooks, server: ServerHandle) -> Callable[[], None] | None:
    """The config's pre_exec hook as Popen's preexec_fn, or None (a plain spawn) without one."""
    if hooks.get("pre_exec") is None:
        return None

    def in_fork() -> None:
        # The fork holds a copy of the supervisor's queued log lines: dropped here (the
        # supervisor writes them), so only the hook's own lines are written, before exec.
        for sink in logs.sinks():
            sink.after_fork()
        hooks.call("pre_exec", server)
        logs.flush_all()

    return in_fork


class HupHandler:
    """SIGHUP, before the roll: the env file and the configuration read again.

    Returns False to abort the roll when the configuration no longer loads;
    then the environment is put back as it was, and nothing else changed.
    """

    def __init__(self, started: Started, hooks: Hooks, cli: bool, gunicorn_file: bool) -> None:
        self.started, self.hooks, self.cli = started, hooks, cli
        self.gunicorn_file = gunicorn_file
        self.arbiter: Arbiter | None = None

    def __call__(self, server: ServerHandle) -> bool:
        env_file = self.started.env_file
        saved, owned = dict(os.environ), set(env_file.owned)
        try:
            env_file.load()
        except ConfigError as exc:
            logger.error("Reload: %s Keeping the previous environment.", exc)
        if self.cli and self.arbiter is not None:
            try:
                # The same command line and environment as at start: --config read again.
                reread, file_hooks, _ = reread_config(sys.argv[1:], os.environ)
            except ConfigError as exc:
                os.environ.clear()
                os.environ.update(saved)
                env_file.owned = owned
                logger.error("Reload aborted, nothing changed: %s", exc)
                return False
            apply_config(self.arbiter, plan(self.arbiter.config, reread), file_hooks)
        if self.gunicorn_file and self.arbiter is not None:
            # As gunicorn: back to the config's worker count, after TTIN/TTOU too.
            arbiter, workers = self.arbiter, self.arbiter.config.workers
            old, arbiter.pool.target = arbiter.pool.target, workers
            self.hooks.call("nworkers_changed", server, workers, old)
        self.hooks.call("on_reload", server)
        return True


def apply_config(arbiter: Arbiter, plan: Plan, hooks: dict[str, Any] | None) -> None:
    """SIGHUP: the re-read configuration, for the roll that follows (see config.reread)."""
    if plan.ignored:
        logger.warning(
            "Reload: %s changed but only apply at a restart; keeping the running values",
            plan.describe_ignored(),
        )
    if plan.applied:
        logger.info("Reload: applying %s", plan.describe_applied())
    config = plan.config
    arbiter.config = arbiter.spawner.config = arbiter.server.cfg = config
    arbiter.hand.graceful = config.timeout_graceful
    if hooks is not None:  # the same Hooks object the spawner calls
        arbiter.hooks.callbacks = Hooks(hooks).callbacks
    if logs.state.handler is not None:  # our own handler, not a --log-config's levels
        logging.getLogger().setLevel(LEVELS[config.log_level])
    if any(field == "workers" for field, _, _ in plan.applied):
        refused = operations.set_target(arbiter, config.workers)
        if refused:
            logger.warning("Reload: staying at %d workers: %s", arbiter.pool.target, refused)
