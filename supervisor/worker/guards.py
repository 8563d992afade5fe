"""What a worker applies to a request before the app sees it: proxy headers, the 503.

:func:`apply_forwarded` is uvicorn's ProxyHeadersMiddleware rule for HTTP
scopes (the same trust list, the same headers, the same result), done on the
scope in the protocol instead of in an ASGI layer that costs a coroutine per
request.
"""

from __future__ import annotations

from typing import Any

import msgspec

OVERLOADED_BODY = msgspec.json.encode(
    {
        "error": "Service temporarily unavailable",
        "message": "Too many concurrent requests",
        "retry_after": 1,
    }
)
OVERLOADED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"retry-after", b"1"),
    (b"content-length", str(len(OVERLOADED_BODY)).encode()),
]
_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def trusted_hosts(forwarded_allow_ips: str | list[str]) -> Any:
    """uvicorn's own trust list (networks, literals, '*'), built once per worker."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: PLC0415

    return ProxyHeadersMiddleware(None, trusted_hosts=forwarded_allow_ips).trusted_hosts  # type: ignore[arg-type]


def apply_forwarded(scope: Any, trusted: Any) -> bool:
    """X-Forwarded-Proto / X-Forwarded-For from a trusted peer, as uvicorn applies them;
    whether the client address changed."""
    client = scope.get("client")
    if (client[0] if client else None) not in trusted:
        return False
    proto: bytes | None = None
    forwarded_for: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-forwarded-for":
            forwarded_for.append(value)
    if proto is not None:
        scheme = proto.decode("latin1").strip()
        if scheme in _SCHEMES:
            scope["scheme"] = (
                scheme.replace("http", "ws") if scope["type"] == "websocket" else scheme
            )
    if forwarded_for:
        host, port = trusted.get_trusted_client_address(b", ".join(forwarded_for).decode("latin1"))
        if host:
            scope["client"] = (host, port)
            return True
    return False


async def send_overloaded(scope: Any, receive: Any, send: Any) -> None:
    """--max-concurrent: 503, Retry-After and the seed's JSON body."""
    await send({"type": "http.response.start", "status": 503, "headers": OVERLOADED_HEADERS})
    await send({"type": "http.response.body", "body": OVERLOADED_BODY})
