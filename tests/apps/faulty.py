"""An app that does what hostile or broken apps do, one endpoint each.

    GET /fork        starts a grandchild (fork, and a subprocess) that outlives the request
    GET /exit0       the worker exits with code 0 while serving (os._exit(0))
    GET /closefd2    closes fd 2, the way a daemonising library might
    GET /alloc?mb=N  allocates N MiB at once (a runaway allocation)
    GET /sleep?s=S   an in-flight request
    GET /block?s=S   blocks the event loop

FAIL_BOOT=PATH: while PATH exists, lifespan startup fails (a backend that is down).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

CHILDREN: list[Any] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                marker = os.environ.get("FAIL_BOOT")
                if marker and Path(marker).exists():
                    await send({"type": "lifespan.startup.failed", "message": "backend is down"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    body = str(os.getpid()).encode()
    if path == "/fork":
        pid = os.fork()
        if pid == 0:  # the grandchild: sleeps, holding whatever it inherited
            time.sleep(float(query.get("s", ["30"])[0]))
            os._exit(0)
        CHILDREN.append(pid)
        CHILDREN.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
        body = str(pid).encode()
    elif path == "/exit0":
        os._exit(0)
    elif path == "/closefd2":
        os.close(2)
    elif path == "/alloc":
        hold = bytearray(int(query.get("mb", ["100"])[0]) * 1024 * 1024)
        CHILDREN.append(hold)
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/block":
        time.sleep(float(query.get("s", ["1"])[0]))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
