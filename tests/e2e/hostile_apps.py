"""Apps that misbehave on purpose, for tests/e2e/test_hostile_e2e.py."""

from __future__ import annotations

import threading
import time
from typing import Any


def _poll_forever() -> None:
    while True:  # like a metrics pusher or a cache refresher that never learned to stop
        time.sleep(0.05)


# Started at import: with --preload this thread lives in the supervisor process.
POLLER = threading.Thread(target=_poll_forever, name="app-poller", daemon=False)
POLLER.start()


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
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
