"""Server-sent events: LLM tokens as they come, and a clean end when the worker drains.

A stream is never cut by a restart: when the worker starts draining, the
stream sends ``event: reconnect`` with a ``retry:`` delay and ends, so the
client (EventSource or any SSE library) reconnects to a sibling worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from enum import Enum
from typing import Any

import msgspec

from app.errors import LLMError
from app.http import Receive, Send, new_error_id

logger = logging.getLogger("app.sse")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]
_encode = msgspec.json.encode


class Outcome(Enum):
    DONE = "done"
    RECONNECT = "reconnect"
    DISCONNECT = "disconnect"
    ERROR = "error"


def format_event(
    data: Any, *, event: str | None = None, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One SSE event; ``data`` is sent as JSON on a single line."""
    lines = []
    if event is not None:
        lines.append(b"event: " + event.encode())
    if event_id is not None:
        lines.append(b"id: " + event_id.encode())
    if retry_ms is not None:
        lines.append(b"retry: " + str(retry_ms).encode())
    lines.append(b"data: " + _encode(data))
    return b"\n".join(lines) + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stream_tokens(
    send: Send,
    receive: Receive,
    tokens: AsyncIterator[str],
    stop: asyncio.Event,
    *,
    stream_id: str,
    instance_id: str,
    reconnect_ms: int = 1000,
) -> Outcome:
    """Send ``tokens`` as events until they end, the client leaves or ``stop`` is set."""

    async def emit(chunk: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": more})

    await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
    await emit(format_event({"stream_id": stream_id, "instance_id": instance_id}, event="start"))
    disconnect = asyncio.ensure_future(_wait_disconnect(receive))
    stopping = asyncio.ensure_future(stop.wait())
    sent = 0
    try:
        while not stop.is_set():
            step = asyncio.ensure_future(anext(tokens))
            await asyncio.wait({step, stopping, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if disconnect.done():
                await _cancel(step)
                return Outcome.DISCONNECT
            if not step.done():
                await _cancel(step)
                break
            try:
                token = step.result()
            except StopAsyncIteration:
                await emit(format_event({"tokens": sent, "finish_reason": "stop"}, event="done"))
                await emit(b"", more=False)
                return Outcome.DONE
            except LLMError as exc:
                error_id = new_error_id()
                logger.warning("Stream %s failed [%s]: %s", stream_id, error_id, exc)
                body = {"error": "LLM Error", "message": str(exc), "error_id": error_id}
                await emit(format_event(body, event="error"))
                await emit(b"", more=False)
                return Outcome.ERROR
            sent += 1
            await emit(format_event({"token": token}, event_id=f"{stream_id}:{sent}"))
        reconnect = {"reason": "draining", "instance_id": instance_id, "tokens": sent}
        await emit(format_event(reconnect, event="reconnect", retry_ms=reconnect_ms))
        await emit(b"", more=False)
        return Outcome.RECONNECT
    finally:
        disconnect.cancel()
        stopping.cancel()
        aclose = getattr(tokens, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel and wait for ``task`` without swallowing a cancellation aimed at us."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as forgotten
