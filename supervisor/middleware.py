"""What a worker adds to any app when asked: a concurrency limit, metrics, JSON access logs.

One pure ASGI layer (no ``BaseHTTPMiddleware``: streams pass through
untouched) installed only when one of its features is on, so the default hot
path is uvicorn's alone. The instance header needs no layer at all: it goes
into uvicorn's default response headers.

Counters are plain ints and floats in one dict, shipped to the supervisor in
each heartbeat and summed there over all workers, live and exited.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.config import Config

access_logger = logging.getLogger("supervisor.access")
logger = logging.getLogger("supervisor.worker")

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
# Prometheus' default buckets, which dashboards already expect.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKET_KEYS = tuple(f"duration_le_{bound}" for bound in DURATION_BUCKETS)
STATUS_KEYS = {1: "responses_1xx", 2: "responses_2xx", 3: "responses_3xx", 4: "responses_4xx"}
REQUEST_ID_HEADER = b"x-request-id"


def wanted(config: Config) -> bool:
    """Whether any feature of this layer is on."""
    return bool(
        config.max_concurrent
        or config.metrics_bind
        or config.metrics_path
        or config.slow_request_ms
        or (config.access_log and config.log_format == "json")
    )


class Protection:
    """Per-worker limit, counters, access log and slow-request warnings."""

    def __init__(
        self,
        app: Any,
        config: Config,
        metrics_text: Callable[[], Any] | None = None,
    ) -> None:
        self.app = app
        self.limit = config.max_concurrent or 0
        self.bypass = frozenset(config.health_paths)
        self.slow_seconds = (config.slow_request_ms or 0) / 1000
        self.json_access = config.access_log and config.log_format == "json"
        self.metrics_path = config.metrics_path
        self.metrics_text = metrics_text
        self.instance_id = config.instance_id or ""
        self.pid = os.getpid()
        self.in_flight = 0
        # For loop-lag warnings (same --slow-request-ms knob): what ran during the lag.
        self.track_paths = bool(self.slow_seconds)
        self.paths_in_flight: dict[int, str] = {}
        self.recent_paths: set[str] = set()  # since the last tick
        self.counters: dict[str, float] = dict.fromkeys(
            (*BUCKET_KEYS, *STATUS_KEYS.values(), "responses_5xx", "rejected"), 0.0
        )
        self.counters.update(duration_sum=0.0, duration_count=0.0)

    def stats(self) -> dict[str, float]:
        return {**self.counters, "in_flight_http": float(self.in_flight)}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.metrics_path is not None and path == self.metrics_path and self.metrics_text:
            await self._serve_metrics(send)
            return
        counted = path not in self.bypass
        if counted and self.limit and self.in_flight >= self.limit:
            self.counters["rejected"] += 1
            await _send_overloaded(send)
            self._record(scope, 503, len(OVERLOADED_BODY), 0.0, None)
            return
        request_id = _request_id(scope) if self.json_access else None
        status = 500
        sent = 0

        async def observed_send(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if request_id is not None:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)],
                    }
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        started = time.perf_counter()
        if counted:
            self.in_flight += 1
        key = id(scope)
        if self.track_paths:
            self.paths_in_flight[key] = path
            self.recent_paths.add(path)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            if counted:
                self.in_flight -= 1
            if self.track_paths:
                del self.paths_in_flight[key]
            self._record(scope, status, sent, time.perf_counter() - started, request_id)

    def _record(
        self, scope: Any, status: int, sent: int, seconds: float, request_id: bytes | None
    ) -> None:
        counters = self.counters
        counters[STATUS_KEYS.get(status // 100, "responses_5xx")] += 1
        counters["duration_sum"] += seconds
        counters["duration_count"] += 1
        for bound, bucket in zip(DURATION_BUCKETS, BUCKET_KEYS, strict=True):
            if seconds <= bound:
                counters[bucket] += 1
                break
        if self.json_access:
            self._log_access(scope, status, sent, seconds, request_id)
        if self.slow_seconds and seconds >= self.slow_seconds:
            logger.warning(
                "Slow request: %s %s took %.0f ms (status %d)",
                scope["method"],
                scope["path"],
                seconds * 1000,
                status,
                extra={"path": scope["path"], "duration_ms": round(seconds * 1000, 3)},
            )

    def _log_access(
        self, scope: Any, status: int, sent: int, seconds: float, request_id: bytes | None
    ) -> None:
        client = scope.get("client")
        query = scope.get("query_string", b"")
        access_logger.info(
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "query": query.decode("latin-1") if query else "",
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes": sent,
                "client": f"{client[0]}:{client[1]}" if client else None,
                "request_id": request_id.decode("latin-1") if request_id else None,
                "worker_pid": self.pid,
            },
        )

    async def _serve_metrics(self, send: Any) -> None:
        assert self.metrics_text is not None
        try:
            body: bytes = (await self.metrics_text()).encode()
            status = 200
        except (OSError, RuntimeError) as exc:
            body = f"# metrics unavailable: {exc}\n".encode()
            status = 503
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _request_id(scope: Any) -> bytes:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and 0 < len(value) <= 200:
            return bytes(value)
    return uuid.uuid4().hex.encode()


async def _send_overloaded(send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": OVERLOADED_HEADERS})
    await send({"type": "http.response.body", "body": OVERLOADED_BODY})
