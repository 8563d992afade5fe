"""--ready-path: before a new worker accepts a connection, it asks its own app.

The question is an in-process ASGI call (a GET of the path, no socket): what
the app answers is what a load balancer's probe would get, so a /ready that
checks Redis and Postgres holds the worker back until they answer. Until a
2xx, the worker has not started listening and no client reaches it; it asks
again every quarter second, and the supervisor replaces it at --timeout-boot
(the reason it did not get ready rides along as its boot failure message).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("supervisor.worker")

RETRY_SECONDS = 0.25
ANSWER_TIMEOUT = 5.0  # one probe that hangs is a failed probe, then asked again


async def ask(app: Any, path: str, state: dict[str, Any] | None = None) -> str | None:
    """GET ``path`` through ``app``: None if it answered 2xx, else what went wrong."""
    route, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"supervisor-ready-probe")],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": dict(state or {}),
    }
    status: list[int] = []
    answered = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    try:
        await asyncio.wait_for(app(scope, receive, send), ANSWER_TIMEOUT)
    except TimeoutError:
        return f"no answer within {ANSWER_TIMEOUT:g}s"
    except Exception as exc:  # the app failing is its answer
        return f"raised {type(exc).__name__}: {exc}"
    finally:
        answered.set()
    if not status:
        return "the app sent no response"
    if not 200 <= status[0] < 300:
        return f"answered {status[0]}"
    return None


async def wait_ready(
    app: Any,
    path: str,
    state: dict[str, Any] | None,
    *,
    stop: Callable[[], bool],
    report: Callable[[str], None],
) -> bool:
    """Ask until the app answers 2xx (True) or ``stop()`` (False); each new reason it
    is not ready is logged once and ``report``-ed to the supervisor."""
    last: str | None = None
    while not stop():
        problem = await ask(app, path, state)
        if problem is None:
            return True
        if problem != last:
            last = problem
            message = f"not ready: GET {path} {problem}"
            logger.warning("Worker %d %s; asking again until --timeout-boot", os.getpid(), message)
            report(message)
        await asyncio.sleep(RETRY_SECONDS)
    return False


class StartedLifespan:
    """A lifespan whose startup already ran (before the readiness wait): uvicorn's own
    startup must not run it twice; everything else is the real one's."""

    def __init__(self, lifespan: Any) -> None:
        self._lifespan = lifespan

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        await self._lifespan.shutdown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lifespan, name)
