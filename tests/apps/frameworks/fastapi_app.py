"""A FastAPI service as its users write one: uvicorn's LOGGING_CONFIG applied at import
(copied from uvicorn's docs, "uvicorn.access" handler included), a module logger with
extras, an HTTPException, an uncaught exception and a StreamingResponse.

    GET /items/{n}    200 (n < 100) with a record of this module's logger, else 404
    GET /boom         RuntimeError: uvicorn logs "Exception in ASGI application"
    GET /stream       StreamingResponse of 5 chunks ("chunk 0\\n" ... "chunk 4\\n")
"""

from __future__ import annotations

import asyncio
import copy
import logging
import logging.config
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from uvicorn.config import LOGGING_CONFIG

config = copy.deepcopy(LOGGING_CONFIG)
config["loggers"][__name__] = {"handlers": ["default"], "level": "INFO", "propagate": False}
logging.config.dictConfig(config)

log = logging.getLogger(__name__)
app = FastAPI()


class Customer:
    """Something an app puts in ``extra`` that JSON cannot encode."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Customer {self.name}>"


@app.get("/items/{n}")
async def item(n: int) -> dict[str, int]:
    if n >= 100:
        raise HTTPException(status_code=404, detail="Item not found")
    log.info("item %d looked up", n, extra={"item": n, "customer": Customer("ada")})
    return {"item": n}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("fastapi boom")


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            await asyncio.sleep(0.01)
            yield f"chunk {index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")
