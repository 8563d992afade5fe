"""An app that does to logging what real apps do: dictConfig at import, its own console
handler, extras JSON cannot encode, print(), warnings, raw writes to fd 2, a blocked loop.

    GET /log      one record of the "app" logger with an unencodable extra
    GET /badfmt   a record whose %-arguments do not match its template
    GET /print    print() of two lines, and one to stderr
    GET /warn     warnings.warn(...)
    GET /raw      os.write(2, ...) below Python's streams
    GET /error    an exception in the app (uvicorn logs "Exception in ASGI application")
    GET /block?s  time.sleep on the event loop

LOGGING_APP_DISABLE=1 makes the dictConfig disable existing loggers (Python's default).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
import time
import warnings
from typing import Any
from urllib.parse import parse_qs

logging.config.dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": os.environ.get("LOGGING_APP_DISABLE") == "1",
        "formatters": {"plain": {"format": "APPTEXT %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "plain"},
            # What many apps copy from uvicorn's LOGGING_CONFIG: an access handler.
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "app": {"handlers": ["console"], "level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
)
log = logging.getLogger("app")


class Unencodable:
    """Like Django's request object in django.request records: JSON cannot encode it."""

    def __repr__(self) -> str:
        return "<Unencodable request>"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    if path == "/log":
        log.info("hello %s", "world", extra={"request": Unencodable(), "n": 7})
    elif path == "/badfmt":
        log.info("count %d", "not a number")
    elif path == "/print":
        print("printed one")
        print("printed two\nprinted three")
        print("to stderr", file=sys.stderr)
    elif path == "/warn":
        warnings.warn("careful now", UserWarning, stacklevel=1)
    elif path == "/raw":
        os.write(2, b"raw line on fd 2\n")
    elif path == "/error":
        raise RuntimeError("boom")
    elif path == "/block":
        time.sleep(float(query.get("s", ["1"])[0]))
    await asyncio.sleep(0)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})
