"""A worker's drain: the flag its HTTP protocol reads, and the app's notice.

When the supervisor asks a worker to drain, the worker stops accepting and
every response from then on asks its client to close the connection; the
app is told through the hooks registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DrainState:
    """Shared by the server and the HTTP protocol: are we draining?"""

    __slots__ = ("draining", "hooks")

    def __init__(self) -> None:
        self.draining = False
        self.hooks: list[Callable[[], Any]] = []
