"""Server hooks (gunicorn's names), and the ``server`` / ``worker`` objects they receive.

The objects live as long as what they stand for, so that what one hook sets
another finds (gunicorn's worker-id recipes rely on it): one ``server`` for
the supervisor's life; one ``worker`` from ``pre_fork`` (pid ``"[booting]"``)
through ``post_fork`` (in the new worker, pid set) to ``worker_exit``.

``server``: ``pid``, ``app``, ``cfg`` (the Config), ``log``, ``num_workers``
(the target), ``WORKERS`` (pid -> worker of the live pool) and
``snapshot()`` (a read-only view of the pool, see :mod:`supervisor.pool`).
``worker``: ``pid``, ``ppid``, ``age`` (its spawn number), ``generation``,
``alive``, ``log``, ``cfg``; once it is gone also ``requests``, ``rss``
and ``leaving`` (why; ``drain_reason`` is the older name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from supervisor.config import Config
from supervisor.pool import PoolSnapshot, Reason

logger = logging.getLogger("supervisor")

HOOK_NAMES = frozenset(
    {
        "on_starting",
        "when_ready",
        "pre_fork",
        "post_fork",
        "post_worker_init",
        "worker_int",
        "worker_abort",
        "pre_exec",
        "worker_exit",
        "child_exit",
        "nworkers_changed",
        "on_exit",
        "on_reload",
        "reopen_logs",
        "ssl_context",
    }
)


class ServerHandle:
    """The ``server`` every hook receives."""

    def __init__(self, cfg: Config, snapshot: Callable[[], PoolSnapshot] | None = None) -> None:
        self.pid = os.getpid()
        self.app = cfg.app
        self.cfg = cfg
        self.log = logger
        self.WORKERS: dict[int, WorkerHandle] = {}
        self._snapshot = snapshot

    @property
    def num_workers(self) -> int:
        return self._snapshot().target if self._snapshot else self.cfg.workers

    def snapshot(self) -> PoolSnapshot:
        if self._snapshot is None:
            raise RuntimeError("the pool does not exist yet (on_starting)")
        return self._snapshot()


class WorkerHandle:
    """The ``worker`` a hook receives, from pre_fork to worker_exit."""

    def __init__(self, age: int, generation: int, cfg: Config) -> None:
        self.pid: int | str = "[booting]"
        self.ppid = os.getpid()
        self.age = age
        self.generation = generation
        self.alive = True
        self.cfg = cfg
        self.log = logger
        self.requests = 0
        self.rss = 0
        self.leaving: Reason | None = None

    @property
    def drain_reason(self) -> Reason | None:
        return self.leaving


Hook = Callable[..., Any]


class Hooks:
    """Named callbacks; a failing hook is logged with context and never stops the supervisor."""

    def __init__(self, callbacks: Mapping[str, Hook] | None = None) -> None:
        self.callbacks: dict[str, list[Hook]] = {}
        for name, callback in (callbacks or {}).items():
            self.add(name, callback)

    def add(self, name: str, callback: Hook) -> None:
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r}")
        self.callbacks.setdefault(name, []).append(callback)

    def call(self, name: str, *args: Any) -> Any:
        """Run every callback of ``name`` with gunicorn's arguments; the last one's result."""
        result = None
        for callback in self.callbacks.get(name, ()):
            try:
                result = callback(*args)
            except Exception:
                logger.exception("The %s hook %r failed", name, callback)
        return result

    def get(self, name: str) -> Hook | None:
        """The one callback of ``name`` whose result matters (ssl_context), if any."""
        found = self.callbacks.get(name)
        return found[-1] if found else None
