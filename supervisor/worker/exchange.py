"""One HTTP exchange as an access line sees it: what the request cycle hands over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Exchange(Protocol):
    """What an access line is made of (the protocol's request/response cycle)."""

    scope: Any
    status: int
    sent: int
    duration: float
    request_id: bytes | None
    response_headers: Any
    target: bytes  # the request target as sent (gunicorn's RAW_URI)
    method: bytes  # the request method as sent
    client_text: str  # "host:port", or "-"


LineMaker = Callable[[Exchange], bytes]


def client_label(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def raw_target(scope: Any) -> bytes:
    """The request target rebuilt from a scope: raw path and query."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
    query: bytes = scope["query_string"]
    return raw + b"?" + query if query else raw
