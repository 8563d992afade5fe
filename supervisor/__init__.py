"""An async-native process supervisor for ASGI services."""

from __future__ import annotations

__version__ = "0.1.0"

from supervisor.api import run

__all__ = ["__version__", "run"]
