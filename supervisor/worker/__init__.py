"""The worker side: what runs in each forked child (it never imports the arbiter)."""

from __future__ import annotations

from supervisor.worker.loading import AppLoadFailure, load_app
from supervisor.worker.main import WorkerStart, run_worker

__all__ = ["AppLoadFailure", "WorkerStart", "load_app", "run_worker"]
