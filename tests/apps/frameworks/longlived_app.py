"""A FastAPI app with long-lived connections, for the drain tests.

    WS  /ws               echo: "ping" -> "pong <pid>"; stays open until the client or the
                          server closes it
    WS  /ws/notice        the same, and "draining <seconds left>" the moment the drain notice
                          (scope["extensions"]["supervisor.drain"]) is set
    WS  /ws/app-close     the same; on the drain notice the app closes it itself: 4000 "moving"
    GET /stream?seconds=S a plain StreamingResponse: one line every 0.1 s for S seconds
    GET /sse?seconds=S    sse-starlette's EventSourceResponse: one event every 0.1 s for S s
    GET /notice           {"pid", "draining": supervisor.is_draining(), "in_scope": bool}
    GET /slow?seconds=S   an ordinary request that takes S seconds

Everything goes through a pure ASGI middleware, as in real apps: the notice must
reach the app through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse

import supervisor

PID = os.getpid  # the worker's pid, read per call (the app is imported before the fork)
TICK = 0.1


class Tagging:
    """A pure ASGI middleware (it wraps the app: an attribute on the app would be hidden)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


app = FastAPI()


async def _echo(websocket: WebSocket) -> None:
    while True:
        text = await websocket.receive_text()
        if text == "ping":
            await websocket.send_text(f"pong {PID()}")


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await _echo(websocket)


@app.websocket("/ws/notice")
async def notice(websocket: WebSocket) -> None:
    await websocket.accept()
    drain = websocket.scope["extensions"]["supervisor.drain"]

    async def announce() -> None:
        await drain.wait()
        await websocket.send_text(f"draining {drain.seconds_left():.1f}")

    told = asyncio.ensure_future(announce())
    try:
        await _echo(websocket)
    except WebSocketDisconnect:
        pass
    finally:
        told.cancel()


@app.websocket("/ws/app-close")
async def app_close(websocket: WebSocket) -> None:
    await websocket.accept()
    echoing = asyncio.ensure_future(_echo(websocket))
    drained = asyncio.ensure_future(supervisor.draining())
    await asyncio.wait({echoing, drained}, return_when=asyncio.FIRST_COMPLETED)
    if drained.done():
        echoing.cancel()
        await websocket.close(code=4000, reason="moving")
    else:
        drained.cancel()
        echoing.exception()  # the client left (WebSocketDisconnect): retrieved, not logged


async def _lines(seconds: float) -> AsyncIterator[bytes]:
    for n in range(round(seconds / TICK)):
        yield f"line {n} {PID()}\n".encode()
        await asyncio.sleep(TICK)
    yield b"end\n"


@app.get("/stream")
async def stream(seconds: float = 1.0) -> StreamingResponse:
    return StreamingResponse(_lines(seconds), media_type="text/plain")


@app.get("/sse")
async def sse(seconds: float = 1.0) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        for n in range(round(seconds / TICK)):
            yield {"event": "tick", "data": str(n)}
            await asyncio.sleep(TICK)
        yield {"event": "end", "data": str(PID())}

    return EventSourceResponse(events(), ping=0)


@app.get("/notice")
async def notice_state(request: Request) -> JSONResponse:
    in_scope = "supervisor.drain" in request.scope.get("extensions", {})
    body = {"pid": PID(), "draining": supervisor.is_draining(), "in_scope": in_scope}
    return JSONResponse(body)


@app.get("/slow")
async def slow(seconds: float = 1.0) -> JSONResponse:
    await asyncio.sleep(seconds)
    return JSONResponse({"pid": PID()})


asgi = Tagging(app)
