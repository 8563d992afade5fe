"""gunicorn's request limits (limit_request_line/fields/field_size) in front of the app.

uvicorn's parsers have no such limits, so a request over one is answered here,
before the app sees it, as gunicorn's own parser answers it: 414 for the
request line, 431 for too many or too large header fields, and the connection
closed. Only installed when a limit is set: nothing on the request path otherwise.
"""

from __future__ import annotations

from typing import Any

from supervisor.config import Config

_REASONS = {414: b"Request-URI Too Long", 431: b"Request Header Fields Too Large"}


def request_line_length(scope: Any) -> int:
    """The bytes of "METHOD TARGET HTTP/x.y" (without CRLF), rebuilt from the scope."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("latin-1", "replace")
    query = scope.get("query_string") or b""
    target = len(raw_path) + (1 + len(query) if query else 0)
    return len(scope.get("method", "")) + 1 + target + len(" HTTP/") + len(scope["http_version"])


def refusal(scope: Any, line: int, fields: int, field_size: int) -> int | None:
    """The status to answer instead of the app, or None when the request is within limits."""
    if line and request_line_length(scope) > line:
        return 414
    headers = scope.get("headers") or ()
    if fields and len(headers) > fields:
        return 431
    if field_size and any(len(name) + len(value) + 2 > field_size for name, value in headers):
        return 431
    return None


class RequestLimits:
    """An ASGI wrapper answering 414/431 for HTTP requests over gunicorn's limits."""

    def __init__(self, app: Any, line: int, fields: int, field_size: int) -> None:
        self.app = app
        self.limits = (line, fields, field_size)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status = refusal(scope, *self.limits) if scope["type"] == "http" else None
        if status is None:
            await self.app(scope, receive, send)
            return
        body = _REASONS[status] + b"\n"
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def with_limits(app: Any, config: Config) -> Any:
    line, fields, size = (
        config.limit_request_line,
        config.limit_request_fields,
        config.limit_request_field_size,
    )
    return RequestLimits(app, line, fields, size) if line or fields or size else app
