"""Server hooks (gunicorn's names) called at the same moments in the supervisor's life."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("supervisor")

HOOK_NAMES = frozenset(
    {
        "on_starting",
        "when_ready",
        "pre_fork",
        "post_fork",
        "worker_exit",
        "on_exit",
        "on_reload",
        "reopen_logs",
    }
)


class Hooks:
    """Named callbacks; a failing hook is logged with context and never stops the supervisor."""

    def __init__(self, callbacks: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.callbacks: dict[str, list[Callable[..., Any]]] = {}
        for name, callback in (callbacks or {}).items():
            self.add(name, callback)

    def add(self, name: str, callback: Callable[..., Any]) -> None:
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r}")
        self.callbacks.setdefault(name, []).append(callback)

    def call(self, name: str, *args: Any) -> None:
        for callback in self.callbacks.get(name, ()):
            try:
                callback(*args)
            except Exception:
                logger.exception("The %s hook %r failed", name, callback)
