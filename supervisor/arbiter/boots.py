"""What new workers serve, and what the supervisor knows about workers that do not boot.

A worker normally loads the app itself (or serves the app preloaded in the
supervisor). Under --reload, a save that breaks the import must never take
the port down: the old workers keep serving; when none can, workers serve a
503 page with the error until the next good save.
"""

from __future__ import annotations

import logging
from typing import Any

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import Reason, WorkerState
from supervisor.system.watch import ReloadErrorApp

logger = logging.getLogger("supervisor")


class BootWatch:
    """Boot failures: shown once each; the one that keeps the pool from serving."""

    def __init__(self, preloaded_app: Any | None) -> None:
        self.preloaded_app = preloaded_app
        self.reload_error: str | None = None  # --reload: why no worker can load the app
        self.failing: str | None = None  # none serve and new workers fail to boot
        self._shown: set[str] = set()

    def app(self) -> Any | None:
        """What a new worker serves: the error page, the preloaded app, or None (load it)."""
        return ReloadErrorApp(self.reload_error) if self.reload_error else self.preloaded_app

    def shown(self, message: str | None) -> bool:
        """Was this failure logged before? (Then the next one is not.)"""
        if message is None:
            return False
        seen = message in self._shown
        self._shown.add(message)
        return seen

    def source_changed(self) -> None:
        """--reload: new code on disk; what was known about the old is void."""
        self.reload_error = None
        self.preloaded_app = None  # preloaded code is the old code
        self._shown.clear()

    def reload_failed(self, message: str, workers: list[WorkerRecord]) -> None:
        """--reload: new code that cannot load keeps the old workers serving."""
        first = self.reload_error is None
        self.reload_error = message
        serving = [w for w in workers if w.state is WorkerState.SERVING]
        for worker in serving:
            # Old workers with working code stay; error pages are refreshed with this error.
            worker.retiring = Reason.RELOAD if worker.serves_error else None
        if not first:
            return
        if any(not w.serves_error for w in serving):
            logger.error("Reload failed; the running workers keep serving the previous code")
        else:
            logger.error("No worker can load the app; answering 503 with the error until fixed")
