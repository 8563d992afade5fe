"""A deployable app for the canary tests: what a build does comes from its environment
(an --env-file the supervisor re-reads on SIGHUP), read once when a worker starts.

CANARY_VERSION     the body of every answer ("v1", "v2", ...)
CANARY_FAIL_SHARE  this share of requests answers 500 (0.3: 3 in every 10)
CANARY_CRASH_AFTER the worker dies this many seconds after its startup
CANARY_READY       "never": GET /ready answers 503 for ever; a number: 503 for that
                   many seconds after startup, then 200
CANARY_DELAY       every answer takes this many seconds more (a slow but correct build)
CANARY_BALLAST_MB  this much memory held from startup on (a build that needs more)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

_state: dict[str, Any] = {"served": 0}


def _settings() -> dict[str, str]:
    return {
        "version": os.environ.get("CANARY_VERSION", "v0"),
        "fail_share": os.environ.get("CANARY_FAIL_SHARE", "0"),
        "crash_after": os.environ.get("CANARY_CRASH_AFTER", ""),
        "ready": os.environ.get("CANARY_READY", ""),
        "delay": os.environ.get("CANARY_DELAY", ""),
        "ballast": os.environ.get("CANARY_BALLAST_MB", ""),
    }


async def _crash_later(seconds: float) -> None:
    await asyncio.sleep(seconds)
    os._exit(13)


def _ready(settings: dict[str, str], started: float) -> bool:
    ready = settings["ready"]
    if ready == "never":
        return False
    return not ready or time.monotonic() - started >= float(ready)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                settings = _settings()
                _state.update(settings=settings, started=time.monotonic())
                # Touched pages: resident, as a real allocation would be.
                _state["ballast"] = bytearray(os.urandom(1)) * (int(settings["ballast"] or 0) << 20)
                if settings["crash_after"]:
                    _state["crasher"] = asyncio.ensure_future(
                        _crash_later(float(settings["crash_after"]))
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    settings = _state["settings"]
    status = 200
    if scope["path"] == "/ready":
        status = 200 if _ready(settings, _state["started"]) else 503
    else:
        if settings["delay"]:
            await asyncio.sleep(float(settings["delay"]))
        _state["served"] += 1
        # Deterministic: exactly that share of every ten requests fails.
        if _state["served"] % 10 < round(float(settings["fail_share"] or 0) * 10):
            status = 500
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"x-worker-pid", str(os.getpid()).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": settings["version"].encode()})
