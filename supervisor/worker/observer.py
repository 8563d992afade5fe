"""A worker's request observer: what every finished exchange updates, and where its line goes.

The HTTP protocol (:mod:`supervisor.worker.protocol`) or, for other HTTP
implementations, one ASGI layer (:mod:`supervisor.worker.asgi_layer`) hands
each exchange to :meth:`Observer.finish` when it ends: the counters move and
one access line is queued, written with the others of its event-loop turn.
The observer also decides, per request, which app answers it: the real one,
the --max-concurrent 503, or the --metrics-path page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from supervisor.logs.sink import LineSink
from supervisor.worker.access import LineMaker
from supervisor.worker.counters import Counters
from supervisor.worker.drain import DrainState
from supervisor.worker.guards import send_overloaded

logger = logging.getLogger("supervisor.worker")
REQUEST_ID = b"x-request-id"
RECENT_SLOW_CAP = 32


class Observer:
    """One per worker: what every finished exchange updates, and where its line goes."""

    def __init__(
        self,
        *,
        line: LineMaker | None,
        sink: LineSink | None,
        drain: DrainState,
        counters: Counters | None,
        limit: int = 0,
        bypass: frozenset[str] = frozenset(),
        slow_seconds: float = 0.0,
        request_ids: bool = False,
        trusted: Any | None = None,
        keep_response_headers: bool = False,
        metrics_path: str | None = None,
        metrics_text: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.line = line
        self.sink = sink
        self.drain = drain
        self.counters = counters
        self.limit = limit
        self.bypass = bypass
        self.slow = slow_seconds
        self.request_ids = request_ids
        self.trusted = trusted
        self.keep_response_headers = keep_response_headers
        self.metrics_path = metrics_path
        self.metrics_text = metrics_text
        self.routes = bool(limit or metrics_path)  # does choose_app have anything to decide?
        self.recent_slow: list[tuple[str, float]] = []  # (path, ended): for loop-lag warnings
        self._rid_prefix = os.urandom(8).hex().encode()  # secrets' own source, without its imports
        self._rid_count = 0
        self.block_of: object = None  # the default-header list ``block`` was made from
        self.block = b""
        # Set by the server: near the open-file limit; an allocation failed (memory-hard).
        self.fd_ceiling = 0
        self.on_fd_pressure: Callable[[int], None] | None = None
        self.on_memory_error: Callable[[], None] | None = None

    def default_block(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (server, date, --header) as bytes, once per second."""
        self.block_of = headers
        parts = []
        for name, value in headers:
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header in the default headers.")
            parts.append(name.lower() + b": " + value + b"\r\n")
        self.block = b"".join(parts)
        return self.block

    def request_id(self, scope: Any, sent_x_headers: bool = True) -> bytes:
        """The client's X-Request-Id when it sent one, else a new one (unique per worker
        start: random prefix, then a counter; 32 hex digits like a uuid4)."""
        if sent_x_headers:
            for name, value in scope["headers"]:
                if name == REQUEST_ID and 0 < len(value) <= 200:
                    return bytes(value)
        self._rid_count += 1
        return b"%b%016x" % (self._rid_prefix, self._rid_count)

    def choose_app(self, scope: Any, in_flight: int, app: Any) -> Any:
        """The app to run for this request: the real one, the 503, or the metrics page."""
        path = scope["path"]
        if self.metrics_path is not None and path == self.metrics_path:
            return self.serve_metrics
        if self.limit and in_flight >= self.limit and path not in self.bypass:
            if self.counters is not None:
                self.counters.rejected()
            return send_overloaded
        return app

    def finish(self, c: Any) -> None:
        """An exchange ended (completed, failed or cut): count it and queue its line."""
        seconds = c.duration
        if self.counters is not None:
            self.counters.observe(c.status, seconds)
        line = self.line
        if line is not None:
            made = line(c)
            sink = self.sink
            if sink is not None:  # LineSink.write, inline (once per request)
                sink.queued.append(made)
                if not sink.scheduled:
                    sink.schedule()
        if self.slow and seconds >= self.slow:
            self._slow(c)

    def _slow(self, c: Any) -> None:
        scope = c.scope
        if len(self.recent_slow) < RECENT_SLOW_CAP:
            self.recent_slow.append((scope["path"], c.started + c.duration))
        logger.warning(
            "Slow request: %s %s took %.0f ms (status %d)",
            scope["method"],
            scope["path"],
            c.duration * 1000,
            c.status,
            extra={"path": scope["path"], "duration_ms": round(c.duration * 1000, 3)},
        )

    async def serve_metrics(self, scope: Any, receive: Any, send: Any) -> None:
        """``--metrics-path`` on the app's port: the pool's metrics, from the supervisor."""
        assert self.metrics_text is not None
        try:
            body = (await self.metrics_text()).encode()
            status = 200
        except (OSError, RuntimeError, TimeoutError) as exc:
            body = f"# metrics unavailable: {exc}\n".encode()
            status = 503
        headers = [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def loop_lag_paths(observer: Observer, connections: Any, blocked_since: float) -> list[str]:
    """What ran while the event loop lagged: slow requests that ended after it stopped
    ticking (while the loop is blocked, only the blocker can end), and the requests still
    open now."""
    paths = {path for path, ended in observer.recent_slow if ended >= blocked_since}
    observer.recent_slow.clear()
    for connection in connections:
        cycle = getattr(connection, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            paths.add(cycle.scope.get("path", "?"))
    return sorted(paths)
