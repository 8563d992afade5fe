"""Small ASGI apps the end-to-end tests run under the supervisor."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import parse_qs

LEAK: list[bytes] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    seconds = float(query.get("s", ["0"])[0])
    if "mark" in query:  # tells a test the request is in flight
        with open(query["mark"][0], "w") as marker:
            marker.write(str(os.getpid()))
    if path == "/sleep":
        await asyncio.sleep(seconds)
    elif path == "/block":
        time.sleep(seconds)  # blocks the event loop on purpose
    elif path == "/spin":  # blocks it in Python bytecode: a signal handler still runs
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            pass
    elif path == "/cspin":  # blocks it inside one C call that never checks for signals
        sum(range(int(query.get("n", ["10000000000"])[0])))
    elif path == "/leak":
        LEAK.append(b"x" * int(query.get("bytes", ["1048576"])[0]))
    elif path == "/crash":
        os._exit(17)
    elif path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(int(query.get("n", ["5"])[0])):
            await send({"type": "http.response.body", "body": f"{i}\n".encode(), "more_body": True})
            await asyncio.sleep(seconds)
        await send({"type": "http.response.body", "body": b""})
        return
    body = f"{os.getpid()}".encode()
    if path == "/env":
        body = os.environ.get(query["name"][0], "").encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                (b"x-worker-pid", str(os.getpid()).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> Any:
    return app


async def failing_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        # The way a framework reports a failed startup (Starlette sends this too).
        await send(
            {
                "type": "lifespan.startup.failed",
                "message": "database is unreachable (deliberate startup failure)",
            }
        )
        return
    await app(scope, receive, send)
