"""Signals become events on the supervisor's loop: nothing real happens in a handler.

Until the loop listens, a handler only remembers the signal (cli.main
installs that first thing; :mod:`supervisor.system.early_signals`); once
:func:`watch` runs, what was remembered is handled first, in order, and then
every signal as it comes, by :func:`supervisor.arbiter.operations.on_signal`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio

from supervisor.system import early_signals

HANDLED_SIGNALS = (
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
_remembered: list[int] = []


def _remember(sig: int, frame: object) -> None:
    _remembered.append(sig)


def remember_until_the_loop_listens() -> None:
    """Before the first forks: every handled signal is only remembered, in order."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _remember)
    _remembered[:0] = early_signals.take()  # what came before cli.main's handlers, first


def stop_pending() -> bool:
    """A stop signal came before the loop could handle it."""
    return bool(early_signals.STOP_SIGNALS.intersection(_remembered))


async def watch(on_signal: Callable[[int], None]) -> None:
    """Every signal, as it comes, to ``on_signal`` on the loop (the arbiter's operations)."""
    with anyio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
        # Signals that came before this receiver existed (a fast SIGTERM, a worker's
        # early exit) were only remembered; handle them now, in order.
        early = [*_remembered, signal.SIGCHLD]
        _remembered.clear()
        for sig in early:
            on_signal(sig)
        async for sig in signals:
            on_signal(sig)
