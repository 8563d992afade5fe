"""Tiny raw-ASGI helpers: a request view, JSON responses and the uniform error body."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import msgspec

from app.errors import HTTPError

logger = logging.getLogger("app.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
JSON = b"application/json"
_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


class Request:
    """The parts of an HTTP scope the routes read; the body is read on demand."""

    __slots__ = ("headers", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.encode("latin-1"))
        return value.decode("latin-1") if value is not None else None

    @property
    def client_host(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "unknown"

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 as soon as it is known to exceed ``limit`` bytes."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"The request body exceeds the limit of {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "The client disconnected before sending the whole body.")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"The request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json(self, kind: type[T], limit: int) -> T:
        """The body decoded and validated as ``kind``; 422 with msgspec's message.

        The Content-Type is not checked: ``curl -d`` sends JSON labelled as a form."""
        body = await self.body(limit)
        if not body:
            raise HTTPError(422, "The request body is empty; send a JSON object.")
        decoder = _decoders.get(kind)
        if decoder is None:
            decoder = _decoders[kind] = msgspec.json.Decoder(kind)
        try:
            result: T = decoder.decode(body)
            return result
        except msgspec.ValidationError as exc:
            raise HTTPError(422, f"Invalid request body: {exc}.") from None
        except msgspec.DecodeError as exc:
            raise HTTPError(422, f"The request body is not valid JSON: {exc}.") from None
        except RecursionError:  # msgspec's depth limit, even inside ignored fields
            raise HTTPError(422, "The request body is nested too deeply.") from None


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Headers | None = None
) -> None:
    all_headers: Headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
    ]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, headers: Headers | None = None) -> None:
    await send_response(send, status, _encoder.encode(data), JSON, headers)


def new_error_id() -> str:
    return uuid.uuid4().hex[:16]


def error_body(status: int, message: str, error_id: str, **extra: object) -> dict[str, object]:
    return {
        "error": REASONS.get(status, "Error"),
        "message": message,
        "error_id": error_id,
        **extra,
    }


async def send_error(send: Send, error: HTTPError) -> None:
    error_id = new_error_id()
    logger.info("HTTP %d [%s]: %s", error.status, error_id, error.message)
    body = error_body(error.status, error.message, error_id, **error.extra)
    await send_json(send, error.status, body, error.headers)


async def send_internal_error(send: Send, exc: BaseException, started: bool) -> None:
    """Log the traceback under a fresh error id; answer 500 if nothing was sent yet."""
    error_id = new_error_id()
    logger.error("Unhandled error [%s]", error_id, exc_info=exc)
    if not started:
        body = error_body(500, "An unexpected error occurred; quote the error_id.", error_id)
        await send_json(send, 500, body)
