"""The same request observation for HTTP implementations other than httptools (h11,
zttp): one ASGI layer, slower than the protocol's own (a coroutine and a closure per
request), and the same access lines, counters and limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from supervisor.worker.access import client_label, raw_target
from supervisor.worker.observer import REQUEST_ID, Observer

perf_counter = time.perf_counter


class AsgiExchange:
    """What :class:`ObservedApp` knows about one exchange (the same fields as a cycle)."""

    __slots__ = (
        "client_text",
        "duration",
        "method",
        "request_id",
        "response_headers",
        "scope",
        "sent",
        "status",
        "target",
    )

    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.status = 499
        self.sent = 0
        self.duration = 0.0
        self.request_id: bytes | None = None
        self.response_headers: Any = None
        self.target = raw_target(scope)
        self.method = scope["method"].encode("latin-1", "replace")
        self.client_text = client_label(scope.get("client"))


class ObservedApp:
    """The same observation for HTTP implementations other than httptools: an ASGI layer."""

    def __init__(self, app: Any, observer: Observer, in_flight: Callable[[], int]) -> None:
        self.app = app
        self.observer = observer
        self.in_flight = in_flight

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observer = self.observer
        exchange = AsgiExchange(scope)
        if observer.request_ids:
            exchange.request_id = observer.request_id(scope)
        app = observer.choose_app(scope, self.in_flight() - 1, self.app)
        started = perf_counter()

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                headers = list(message.get("headers", ()))
                if observer.keep_response_headers:
                    exchange.response_headers = headers
                if exchange.request_id is not None:
                    headers.append((REQUEST_ID, exchange.request_id))
                # HTTP/2 has no Connection header (RFC 9113 8.2.2): GOAWAY does that.
                if observer.drain.draining and scope["http_version"] != "2":
                    headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                exchange.sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.duration = perf_counter() - started
            await send(message)

        try:
            await app(scope, receive, observed_send)
        finally:
            if not exchange.duration:
                exchange.duration = perf_counter() - started
            observer.finish(exchange)
