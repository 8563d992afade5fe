"""The app in this process: its ASGI lifespan driven by hand, requests through httpx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.main import App
from app.settings import Settings


async def never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class StartupFailed(Exception):
    pass


@contextlib.asynccontextmanager
async def lifespan(app: App, scope: dict[str, Any] | None = None) -> AsyncIterator[App]:
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app(scope or {"type": "lifespan"}, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(from_app.get(), 10)
    if message["type"] == "lifespan.startup.failed":
        await task
        raise StartupFailed(message["message"])
    try:
        yield app
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(from_app.get(), 10))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    """The started app and a client for it (the client's address is 127.0.0.1)."""
    app = App(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            yield app, client
