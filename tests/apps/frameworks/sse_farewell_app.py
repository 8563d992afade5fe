"""docs/draining.md's sse-starlette recipe, as written there: on the drain notice the
lifespan sets sse-starlette's ``AppStatus.should_exit``; every EventSourceResponse then
sets its ``shutdown_event`` and gives its generator ``shutdown_grace_period`` to end.

    GET /sse?seconds=S    one event every 0.1 s for S s; on the drain, "reconnect" and the end
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus

import supervisor

TICK = 0.1


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async def tell_sse_starlette() -> None:
        await supervisor.draining()
        AppStatus.should_exit = True  # the streams' shutdown_event, then their grace period

    bridge = asyncio.ensure_future(tell_sse_starlette())
    yield
    bridge.cancel()


app = FastAPI(lifespan=lifespan)


@app.get("/sse")
async def sse(seconds: float = 1.0) -> EventSourceResponse:
    stop = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        for n in range(round(seconds / TICK)):
            if stop.is_set():
                yield {"event": "reconnect", "data": str(os.getpid()), "retry": 1000}
                return
            yield {"event": "tick", "data": str(n)}
            await asyncio.sleep(TICK)
        yield {"event": "end", "data": str(os.getpid())}

    return EventSourceResponse(events(), ping=0, shutdown_event=stop, shutdown_grace_period=2)
