"""In a worker: the pool-wide metrics page, for an app that serves its own /metrics.

``supervisor.pooled_metrics()`` returns what the supervisor's metrics endpoint
shows (every worker's prometheus_client metrics pooled, beside the
supervisor's own), or None when the app does not run in a worker of a
supervisor serving metrics (under uvicorn, gunicorn, or without
--metrics-bind / --metrics-path): then the app's own registry is all there is.
"""

from __future__ import annotations

from pathlib import Path

_control: list[Path] = []


def enable(control_socket: Path) -> None:
    """Called by the worker at start when its supervisor pools the app's metrics."""
    _control[:] = [control_socket]


async def pooled_metrics() -> str | None:
    """The pool's Prometheus text from the supervisor, or None outside such a worker."""
    if not _control:
        return None
    from supervisor.commands.metrics_client import fetch_metrics  # noqa: PLC0415

    return await fetch_metrics(_control[0])
