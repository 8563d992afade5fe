"""What an operator can ask of a running supervisor, by signal or over the control socket.

SIGTERM, SIGINT, `stop`        drain and exit (a second SIGINT: fast)
SIGQUIT, `stop --fast`         fast shutdown
SIGHUP, `reload`               rolling restart (and the on_hup callback: env, config)
SIGTTIN / SIGTTOU, `scale N`   one worker more / less, or exactly N
SIGUSR1                        reopen log files, here and in every worker
SIGUSR2                        upgrade the supervisor itself (see upgrade.py)
SIGCHLD                        reap the workers that exited (and read news a worker nudged about)
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from supervisor import logs
from supervisor.arbiter.arbiter import Arbiter
from supervisor.system import capacity, watch

logger = logging.getLogger("supervisor")

RELOAD_ABORTED = -1


def on_signal(arbiter: Arbiter, sig: int) -> None:
    handlers: dict[int, Callable[[], object]] = {
        signal.SIGCHLD: arbiter.reap_workers,
        signal.SIGTERM: lambda: stop(arbiter, fast=False, cause="Received SIGTERM"),
        signal.SIGINT: lambda: interrupt(arbiter),
        signal.SIGQUIT: lambda: stop(arbiter, fast=True, cause="Received SIGQUIT"),
        signal.SIGHUP: lambda: reload(arbiter, cause="Received SIGHUP"),
        signal.SIGTTIN: lambda: scale_by(arbiter, +1),
        signal.SIGTTOU: lambda: scale_by(arbiter, -1),
        signal.SIGUSR1: lambda: reopen_logs(arbiter),
        signal.SIGUSR2: lambda: upgrade(arbiter),
    }
    handler = handlers.get(sig)
    if handler is not None:
        handler()
    arbiter.reconcile()


def stop(arbiter: Arbiter, *, fast: bool, cause: str) -> str:
    how = (
        "fast shutdown"
        if fast
        else f"draining workers (up to {arbiter.config.timeout_graceful:g}s)"
    )
    logger.info("%s: %s", cause, how)
    arbiter.stop(fast=fast)
    arbiter.loop.extensions.stopped()  # at once: a quick drain can end before a tick
    return how


def interrupt(arbiter: Arbiter) -> None:
    if arbiter.stop_state is not None:
        logger.warning("Received SIGINT again: forcing exit")
        arbiter.stop(fast=True)
    else:
        logger.info("Received SIGINT: draining workers (press Ctrl-C again to force)")
        arbiter.stop(fast=False)
    arbiter.loop.extensions.stopped()


def reload(arbiter: Arbiter, *, cause: str) -> int | None:
    """A rolling restart; how many workers it replaces (None while stopping)."""
    if arbiter.stop_state is not None:
        return None
    previous = dict(os.environ), arbiter.pool.generation  # what a rollback goes back to
    if arbiter.on_hup is not None and arbiter.on_hup(arbiter.server) is False:
        return RELOAD_ABORTED  # the configuration no longer loads: logged, nothing changed
    live = arbiter.roll()
    arbiter.rollouts.begin(*previous)
    logger.info(
        "%s: rolling restart of %d worker(s), %d at a time (generation %d)",
        cause,
        live,
        arbiter.pool.batch,
        arbiter.pool.generation,
    )
    return live


def set_target(arbiter: Arbiter, workers: int) -> str | None:
    """Keep ``workers`` serving from now on (SIGTTIN, `scale N`); None, or why not.

    Growing is held to what the host can run (see :mod:`supervisor.system.capacity`)
    unless --allow-many-workers; shrinking is always allowed.
    """
    pool = arbiter.pool
    if workers > pool.target:
        running = sum(1 for w in pool.workers.values() if w.live)
        verdict = capacity.judge_here(
            workers, allowed=arbiter.config.allow_many_workers, running=running
        )
        if verdict.refuse:
            return verdict.message
        if verdict.message:
            logger.warning("Scaling up: %s", verdict.message)
    old, pool.target = pool.target, max(1, workers)
    if pool.target != old:
        arbiter.hooks.call("nworkers_changed", arbiter.server, pool.target, old)
    return None


def scale_by(arbiter: Arbiter, step: int) -> None:
    name = "SIGTTIN" if step > 0 else "SIGTTOU"
    refused = set_target(arbiter, arbiter.pool.target + step)
    if refused:
        logger.warning("Received %s: staying at %d workers: %s", name, arbiter.pool.target, refused)
        return
    logger.info("Received %s: scaling to %d workers", name, arbiter.pool.target)


def upgrade(arbiter: Arbiter) -> None:
    if arbiter.loop.extensions.upgrade is None:
        logger.warning("Received SIGUSR2: not upgrading: no upgrade is set up here")
        return
    arbiter.loop.extensions.upgrade()


def reopen_logs(arbiter: Arbiter) -> None:
    logs.reopen()
    logger.info("Received SIGUSR1: log files reopened; asking workers to reopen theirs")
    for worker in arbiter.pool.workers.values():
        arbiter.hand.signal(worker, signal.SIGUSR1)
    arbiter.hooks.call("reopen_logs", arbiter.server)


def source_changed(arbiter: Arbiter, paths: list[str]) -> None:
    """--reload: changed files on disk; every worker is replaced at once, new ones first."""
    if arbiter.stop_state is not None:
        return
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    logger.info("Detected changes in %s; reloading", shown)
    watch.drop_stale_bytecode(paths)
    arbiter.source_changed()
    arbiter.reconcile()
