"""The drain notice: an app learns, the moment its worker starts draining, that it should
wind down, and how long it has.

A draining worker keeps WebSockets and streams open for the drain window
(``--timeout-graceful``) and closes what is still open at its end (WebSocket
1012, a complete chunked body). An app that wants to do better (tell its
WebSocket clients to move, end an SSE stream with a reconnect event) needs to
know that the drain started. Two ways, one notice per worker process:

- ``await supervisor.draining()`` / ``supervisor.is_draining()``, from any
  code of the worker;
- ``scope["extensions"]["supervisor.drain"]`` in every scope (``http``,
  ``websocket``, ``lifespan``): this :class:`DrainNotice`, so a framework or a
  middleware finds it without importing this package. It goes where the
  scope goes, through any middleware.

Outside a supervisor worker (plain uvicorn, gunicorn, tests), the notice is
never set: ``is_draining()`` is False and ``draining()`` waits forever, so
code written for the supervisor runs unchanged elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator
from typing import Any

DRAIN_EXTENSION = "supervisor.drain"


class DrainNotice:
    """Set once, when this worker starts draining. Awaitable (``await notice`` or
    ``await notice.wait()``) from any task; ``deadline`` is when what is still open
    gets closed (a ``time.monotonic()`` value), ``None`` before the drain."""

    __slots__ = ("_waiters", "deadline", "draining")

    def __init__(self) -> None:
        self.draining = False
        self.deadline: float | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self.draining

    def seconds_left(self) -> float | None:
        """Seconds until the worker closes what is still open; ``None`` before the drain."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.0)

    async def wait(self) -> None:
        if self.draining:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    def set(self, deadline: float | None = None) -> None:
        """The worker starts draining (called by the worker, on its event loop)."""
        if self.draining:
            return
        self.draining = True
        self.deadline = deadline
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    def __repr__(self) -> str:
        return f"<DrainNotice draining={self.draining}>"


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# One per process: a forked worker starts with its own copy, not yet set.
NOTICE = DrainNotice()


def is_draining() -> bool:
    """Has this worker started draining? (Never, outside a supervisor worker.)"""
    return NOTICE.draining


async def draining() -> None:
    """Return once this worker starts draining (never, outside a supervisor worker)."""
    await NOTICE.wait()


def add_to_scope(scope: Any, notice: DrainNotice = NOTICE) -> None:
    """Put the notice in ``scope["extensions"]`` (a server may have put others there)."""
    extensions = scope.get("extensions")
    if extensions is None:
        scope["extensions"] = {DRAIN_EXTENSION: notice}
    else:
        extensions[DRAIN_EXTENSION] = notice


class WithDrainNotice:
    """An ASGI layer giving every scope that passes the drain notice. The worker puts it
    around what uvicorn's WebSocket protocol and lifespan run (and around the whole app
    for HTTP implementations other than httptools, whose protocol does it itself)."""

    __slots__ = ("app", "notice", "websockets")

    def __init__(self, app: Any, notice: DrainNotice = NOTICE) -> None:
        self.app = app
        self.notice = notice
        self.websockets = 0  # WebSocket sessions that reached the app (worker totals)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        add_to_scope(scope, self.notice)
        if scope["type"] == "websocket":
            self.websockets += 1
        await self.app(scope, receive, send)
