"""Signals that arrive before the supervisor's loop listens: remembered, never fatal.

A process starts with SIGHUP, SIGTERM, SIGQUIT, SIGUSR1 at "terminate" (and
SIGTTIN/SIGTTOU at "stop"), so one sent a few milliseconds after start (a
deploy script's reload, an orchestrator's stop) would kill the supervisor
before it logged a line. :func:`install` runs first thing in ``cli.main``
(this module imports nothing else) and only remembers them; the arbiter
takes the list over (:func:`take`) and handles each, in order, once its loop
listens, so a SIGTERM during start still drains cleanly. Only a second
SIGINT before then ends the process at once (Ctrl-C twice on a hanging
preload), leaving at most a stale pid file that the next start replaces.
"""

from __future__ import annotations

import os
import signal

EARLY_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

_pending: list[int] = []


def _remember(sig: int, frame: object) -> None:
    if sig == signal.SIGINT and signal.SIGINT in _pending:
        # Whatever is running (an import that hangs): die of SIGINT, as asked.
        os.write(2, b"supervisor: interrupted while starting\n")
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return
    _pending.append(sig)


def install() -> None:
    for sig in EARLY_SIGNALS:
        signal.signal(sig, _remember)


def uninstall() -> None:
    for sig in EARLY_SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    _pending.clear()


def take() -> list[int]:
    """The signals remembered so far, oldest first; they are forgotten here."""
    taken = _pending[:]
    del _pending[: len(taken)]
    return taken
