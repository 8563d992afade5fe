"""A Litestar app, with Litestar's default logging config or one of the fixes for it.

Litestar's default ``LoggingConfig`` runs ``dictConfig`` when the app is built
and puts its queue handler on the root logger and on its ``litestar`` logger:
records then bypass ``--log-format``. ``LITESTAR_LOGGING`` picks how the app
is built (the configuration happens at import, so one variant per process):

    default    Litestar(route_handlers=...)                        (Litestar's default)
    no_root    logging_config=LoggingConfig(configure_root_logger=False)
    propagate  logging_config=LoggingConfig(configure_root_logger=False,
                                            loggers={"litestar": {"propagate": True}})
    none       logging_config=None                                 (request.logger breaks)

    GET /          200, and a record of this module's logger with an extra
    GET /reqlog    200, and a record through ``request.logger`` (Litestar's own logger)
    GET /boom      RuntimeError (Litestar answers 500 itself; logged with debug=True)

``LITESTAR_DEBUG=1`` builds the app with ``debug=True``: Litestar then logs
uncaught exceptions on its ``litestar`` logger.
"""

from __future__ import annotations

import logging
import os

from litestar import Litestar, Request, get
from litestar.logging import LoggingConfig

log = logging.getLogger(__name__)


class Order:
    """Something an app puts in ``extra`` that JSON cannot encode."""

    def __repr__(self) -> str:
        return "<Order 7>"


@get("/")
async def index() -> str:
    log.info("litestar index", extra={"order": Order()})
    return "ok"


@get("/reqlog")
async def request_logger(request: Request) -> str:  # type: ignore[type-arg]
    request.logger.info("litestar request logger", extra={"path": request.url.path})
    return "logged"


@get("/boom")
async def boom() -> str:
    raise RuntimeError("litestar boom")


def build(variant: str, debug: bool) -> Litestar:
    handlers = [index, request_logger, boom]
    if variant == "default":
        return Litestar(route_handlers=handlers, debug=debug)
    if variant == "no_root":
        config = LoggingConfig(configure_root_logger=False)
    elif variant == "propagate":
        config = LoggingConfig(
            configure_root_logger=False, loggers={"litestar": {"propagate": True}}
        )
    elif variant == "none":
        return Litestar(route_handlers=handlers, debug=debug, logging_config=None)
    else:
        raise ValueError(f"LITESTAR_LOGGING={variant!r}: default, no_root, propagate or none")
    return Litestar(route_handlers=handlers, debug=debug, logging_config=config)


app = build(os.environ.get("LITESTAR_LOGGING", "default"), os.environ.get("LITESTAR_DEBUG") == "1")
