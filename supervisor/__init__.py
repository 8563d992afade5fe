"""An async-native process supervisor for ASGI services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor._version import __version__
from supervisor.notice import DRAIN_EXTENSION, DrainNotice, draining, is_draining

__all__ = [
    "DRAIN_EXTENSION",
    "DrainNotice",
    "__version__",
    "draining",
    "is_draining",
    "pooled_metrics",
    "run",
]

if TYPE_CHECKING:
    from supervisor.api import run
    from supervisor.appmetrics.client import pooled_metrics


def __getattr__(name: str) -> Any:
    # `supervisor.run` pulls in the whole API; the CLI and the workers do not need it.
    if name == "run":
        from supervisor.api import run  # noqa: PLC0415

        return run
    if name == "pooled_metrics":
        from supervisor.appmetrics.client import pooled_metrics  # noqa: PLC0415

        return pooled_metrics
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
