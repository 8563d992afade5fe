"""A Starlette app that sets up logging in its lifespan, with ``basicConfig(force=True)``
(which replaces the root logger's handlers with a console handler of its own), and
logs there: "starlette app started" at startup, "starlette app shutting down" at shutdown.

    GET /          200, and a record of this module's logger with an extra
    GET /boom      RuntimeError: uvicorn logs "Exception in ASGI application"
    GET /print     print() from a handler (a "stdout" record in JSON mode)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    logging.basicConfig(
        level=logging.INFO, format="STARLETTETEXT %(levelname)s %(name)s %(message)s", force=True
    )
    log.info("starlette app started")
    yield
    log.info("starlette app shutting down")


async def index(request: Request) -> PlainTextResponse:
    log.info("starlette index", extra={"client_host": request.client, "request": request})
    return PlainTextResponse("ok")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("starlette boom")


async def printer(request: Request) -> PlainTextResponse:
    print("printed by starlette")
    return PlainTextResponse("printed")


app = Starlette(
    routes=[Route("/", index), Route("/boom", boom), Route("/print", printer)],
    lifespan=lifespan,
)
