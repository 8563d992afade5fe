"""SIGABRT in a worker: faulthandler's stack dump first, then gunicorn's worker_abort hook.

The supervisor sends SIGABRT to a worker it found hung (SIGKILL follows), so that
faulthandler writes every thread's stack to the dump pipe. With a worker_abort hook
in the config the worker also calls it, as gunicorn's workers do on SIGABRT. Both
fit on one signal because faulthandler, once it has written the stack, puts back
the handler it found and raises the signal again: a Python handler installed before
``faulthandler.enable`` is that handler. Python runs it as soon as the interpreter
gets control (at once for a loop blocked in Python or in ``time.sleep``); a loop
stuck in C never gives control back, and the stack dump is all there is, as under
gunicorn.
"""

from __future__ import annotations

import faulthandler
import signal
from collections.abc import Callable
from types import FrameType


def install(dump_fd: int, on_abort: Callable[[], None] | None) -> None:
    """The stack dump on fatal signals; ``on_abort`` too on SIGABRT when given."""
    if on_abort is not None:

        def handle(sig: int, frame: FrameType | None) -> None:
            on_abort()

        signal.signal(signal.SIGABRT, handle)  # before enable(): faulthandler chains to it
    if dump_fd >= 0:
        faulthandler.enable(file=dump_fd, all_threads=True)
    else:
        faulthandler.enable(all_threads=True)
