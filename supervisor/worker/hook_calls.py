"""The server hooks a worker calls itself, at gunicorn's moments, with the same objects.

The ``server`` and ``worker`` objects are the ones ``pre_fork`` and ``post_fork`` got
(fork copied them), so what a hook set there is here: ``post_worker_init(worker)``
once the app is loaded and privileges are dropped, before serving;
``worker_int(worker)`` when the worker itself was sent SIGINT; ``worker_abort(worker)``
on SIGABRT once Python gets control (supervisor.worker.abort); ``worker_exit(server,
worker)`` once, on its way out, whatever ended it.
"""

from __future__ import annotations

from typing import Any


class WorkerHooks:
    """A worker's hook calls; without a config file's hooks each is a no-op."""

    def __init__(self, hooks: Any, server: Any, worker: Any) -> None:
        self.hooks, self.server, self.worker = hooks, server, worker
        self.exited = False

    def has(self, name: str) -> bool:
        return self.hooks is not None and self.worker is not None and bool(self.hooks.get(name))

    def _call(self, name: str, *args: Any) -> None:
        if self.hooks is not None and self.worker is not None:
            self.hooks.call(name, *args)

    def post_worker_init(self) -> None:
        self._call("post_worker_init", self.worker)

    def worker_int(self) -> None:
        self._call("worker_int", self.worker)

    def worker_abort(self) -> None:
        if self.worker is not None:
            self.worker.alive = False  # as gunicorn: not alive from worker_abort on
        self._call("worker_abort", self.worker)

    def worker_exit(self) -> None:
        if self.exited:  # SIGABRT's exit may come while the way out runs
            return
        self.exited = True
        if self.worker is not None:
            self.worker.alive = False
        self._call("worker_exit", self.server, self.worker)
