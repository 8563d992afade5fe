"""The raw ASGI app every server runs in the load tests (a trimmed tests/apps/hello.py).

    GET /             200, the worker's pid as the body and in X-Worker-Pid
    GET /sleep?s=1    the same after an asyncio sleep (an in-flight request)
    GET /stream?n=5   a chunked stream of n lines

``mark=PATH`` writes the worker pid to PATH when the request starts, so the
harness knows a request is in flight before it signals the server.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import parse_qs

PID = str(os.getpid()).encode()


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
    pid = str(os.getpid()).encode()  # not PID: with --preload the module loads before the fork
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode()) if scope["query_string"] else {}
    if "mark" in query:
        with open(query["mark"][0], "w") as marker:
            marker.write(pid.decode())
    if path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["0"])[0]))
    elif path == "/stream":
        headers = [(b"content-type", b"text/plain"), (b"x-worker-pid", pid)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(int(query.get("n", ["5"])[0])):
            await send({"type": "http.response.body", "body": b"%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(pid)).encode()),
        (b"x-worker-pid", pid),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": pid})
