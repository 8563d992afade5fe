"""Prometheus metrics for the whole pool, served by the supervisor on ``--metrics-bind``.

Scraping one worker shows one worker's view; the supervisor sees them all.
Every number here is summed over live workers (from their last heartbeat)
plus every worker that has exited (its final heartbeat, kept at reap), so a
counter never goes backwards when a worker recycles. The app's own
prometheus_client metrics are pooled beside them (:mod:`supervisor.appmetrics`).
prometheus_client renders both (text, or OpenMetrics when the scraper asks);
it is imported at the first scrape, not at start.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from supervisor.endpoints import server as endpoint
from supervisor.errors import BindError, ConfigError
from supervisor.pool import PoolSnapshot, Reason, WorkerState, WorkerView
from supervisor.system import memory, sockets
from supervisor.worker.counters import BUCKET_KEYS, DURATION_BUCKETS, STATUS_KEYS

if TYPE_CHECKING:
    from supervisor.appmetrics.pooling import Family

logger = logging.getLogger("supervisor")

HEAD_LIMIT = 8192

AppFamilies = Callable[[], "list[Family]"]


class _Writer:
    """Collects the supervisor's own families as prometheus_client metrics."""

    def __init__(self, instance: str) -> None:
        from prometheus_client.metrics_core import Metric  # noqa: PLC0415 - lazy: RSS

        self.metric_type = Metric
        self.metrics: list[Any] = []
        self.base = {"instance_id": instance}

    def family(self, name: str, kind: str, help_text: str) -> None:
        # prometheus_client names a counter family without its _total suffix.
        family = name.removesuffix("_total") if kind == "counter" else name
        self.metrics.append(self.metric_type(family, help_text, kind))

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.metrics[-1].add_sample(name, {**self.base, **labels}, float(value))


def _long_lived(out: _Writer, workers: tuple[WorkerView, ...]) -> None:
    """Open WebSockets and streams by worker state: during a roll, what the old
    generation still holds (draining) beside what the new one took (serving)."""
    for name, what, attribute in (
        ("supervisor_open_websockets", "Open WebSocket connections", "websockets"),
        ("supervisor_open_streams", "Open streaming HTTP responses", "streams"),
    ):
        out.family(name, "gauge", f"{what}, by worker state.")
        for state in (WorkerState.SERVING, WorkerState.DRAINING):
            count = sum(getattr(w, attribute) for w in workers if w.state is state)
            out.sample(name, count, state=state.value)


def _supervisor_families(snapshot: PoolSnapshot) -> list[Any]:
    """The pool's own families (requests, workers, restarts...), from a snapshot."""
    out = _Writer(snapshot.instance_id)
    workers = snapshot.workers
    stats = snapshot.pooled_stats()

    out.family("supervisor_requests_total", "counter", "Requests served by all workers.")
    out.sample("supervisor_requests_total", snapshot.total_requests())
    out.family("supervisor_requests_in_flight", "gauge", "Requests being served now.")
    out.sample("supervisor_requests_in_flight", sum(w.in_flight for w in workers))
    out.family("supervisor_connections", "gauge", "Open client connections.")
    out.sample("supervisor_connections", sum(w.connections for w in workers))
    _long_lived(out, workers)

    if "duration_count" in stats:
        _request_families(out, stats)
    if "log_stalls" in stats:
        _log_families(out, stats)
    _worker_families(out, snapshot)
    return out.metrics


def _worker_families(out: _Writer, snapshot: PoolSnapshot) -> None:
    workers = snapshot.workers
    out.family("supervisor_workers", "gauge", "Workers by state.")
    for state in WorkerState:
        if state is not WorkerState.STOPPED:
            out.sample(
                "supervisor_workers", sum(w.state is state for w in workers), state=state.value
            )
    out.family("supervisor_workers_target", "gauge", "Workers the supervisor keeps serving.")
    out.sample("supervisor_workers_target", snapshot.target)
    out.family("supervisor_worker_restarts_total", "counter", "Worker replacements by reason.")
    for reason in Reason:
        out.sample(
            "supervisor_worker_restarts_total", snapshot.restarts.get(reason, 0), reason=reason
        )
    out.family("supervisor_worker_rss_bytes", "gauge", "Resident memory of each worker.")
    for w in workers:
        out.sample("supervisor_worker_rss_bytes", w.rss_bytes, worker=str(w.pid))
    out.family("supervisor_worker_requests", "gauge", "Requests served by each worker.")
    for w in workers:
        out.sample("supervisor_worker_requests", w.requests, worker=str(w.pid))
    out.family("supervisor_worker_uptime_seconds", "gauge", "Age of each worker.")
    for w in workers:
        out.sample("supervisor_worker_uptime_seconds", w.age_s, worker=str(w.pid))
    out.family(
        "supervisor_boot_failing", "gauge", "1 while new workers fail to boot and none serve."
    )
    out.sample("supervisor_boot_failing", 1 if snapshot.boot_failing else 0)
    out.family("supervisor_rss_bytes", "gauge", "Resident memory of the supervisor itself.")
    out.sample("supervisor_rss_bytes", _own_rss())
    out.family("supervisor_uptime_seconds", "gauge", "Seconds since the supervisor started.")
    out.sample("supervisor_uptime_seconds", snapshot.uptime_s)


def _request_families(out: _Writer, stats: dict[str, float]) -> None:
    out.family("supervisor_responses_total", "counter", "Responses by status class.")
    for key in STATUS_KEYS:
        out.sample("supervisor_responses_total", stats.get(key, 0.0), status=key[-3:])
    out.family(
        "supervisor_request_duration_seconds", "histogram", "Time to the end of the response."
    )
    cumulative = 0.0
    for bound, key in zip(DURATION_BUCKETS, BUCKET_KEYS, strict=True):
        cumulative += stats.get(key, 0.0)
        out.sample("supervisor_request_duration_seconds_bucket", cumulative, le=str(bound))
    count = stats.get("duration_count", 0.0)
    out.sample("supervisor_request_duration_seconds_bucket", count, le="+Inf")
    out.sample("supervisor_request_duration_seconds_sum", stats.get("duration_sum", 0.0))
    out.sample("supervisor_request_duration_seconds_count", count)
    out.family(
        "supervisor_concurrency_rejections_total",
        "counter",
        "Requests answered 503 by --max-concurrent.",
    )
    out.sample("supervisor_concurrency_rejections_total", stats.get("rejected", 0.0))


def _log_families(out: _Writer, stats: dict[str, float]) -> None:
    out.family(
        "supervisor_log_stalls_total",
        "counter",
        "Times a worker waited for a slow reader of its log output (backpressure).",
    )
    out.sample("supervisor_log_stalls_total", stats.get("log_stalls", 0.0))
    out.family(
        "supervisor_log_stalled_seconds_total",
        "counter",
        "Seconds workers spent waiting for a slow reader of their log output.",
    )
    out.sample("supervisor_log_stalled_seconds_total", stats.get("log_stalled_seconds", 0.0))


def _own_rss() -> int:
    return memory.rss(os.getpid()) or 0


def _app_metrics(families: Iterable[Family]) -> list[Any]:
    from prometheus_client.metrics_core import Metric  # noqa: PLC0415 - lazy: RSS

    made = []
    for family in families:
        metric = Metric(family.name, family.help, family.typ)
        for sample in family.samples:
            metric.add_sample(sample.name, sample.labels, sample.value)
        made.append(metric)
    return made


class _Collected:
    """What prometheus_client's encoders call ``registry``: something with collect()."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics


def encode(
    snapshot: PoolSnapshot, app: AppFamilies | None = None, accept: str = ""
) -> tuple[bytes, str]:
    """The body and content type for an ``Accept`` header: text, or OpenMetrics."""
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415 - lazy: RSS

    metrics = _supervisor_families(snapshot)
    if app is not None:
        metrics += _app_metrics(app())
    encoder, content_type = choose_encoder(accept)
    return encoder(_Collected(metrics)), content_type


def render(snapshot: PoolSnapshot, app: AppFamilies | None = None) -> str:
    """The pool's Prometheus text (the supervisor's families and the app's), from a snapshot."""
    return encode(snapshot, app)[0].decode()


# The endpoint ----------------------------------------------------------------


def open_metrics_listener(address: str) -> socket.socket:
    """``--metrics-bind HOST:PORT``: bound before any fork so a taken port is one clear error."""
    try:
        spec = sockets.parse_bind(address) if ":" in address else None
    except ConfigError:
        spec = None
    if spec is None or spec.kind != "tcp":
        raise ConfigError(f'--metrics-bind: expected HOST:PORT, got "{address}".')
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    # No SO_REUSEPORT here (unlike the app's listeners): a second process must
    # not silently share the metrics port.
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise BindError(f"--metrics-bind {address}: {exc.strerror or exc}.") from exc
    sock.setblocking(False)
    return sock


Encode = Callable[[str], tuple[bytes, str]]  # Accept header -> body, content type


async def serve(sock: socket.socket, body: Encode) -> None:
    """A minimal HTTP/1.1 responder: GET /metrics (or /), one response per connection."""

    async def answer(client: socket.socket) -> None:
        await _answer(client, body)

    await endpoint.serve_each(sock, answer, "Metrics")


def _accept(head: bytes) -> str:
    for line in head.decode("latin-1").splitlines()[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            return value.strip()
    return ""


async def _answer(client: socket.socket, encode: Encode) -> None:
    head = await endpoint.read_until(client, (b"\r\n\r\n", b"\n\n"), HEAD_LIMIT)
    if not head:
        return
    request_line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        status, body, kind = "405 Method Not Allowed", b"Method not allowed\n", "text/plain"
    elif path not in ("/metrics", "/"):
        status, body, kind = "404 Not Found", b"Not found; metrics are at /metrics\n", "text/plain"
    else:
        body, kind = encode(_accept(head))
        status = "200 OK"
    response = (
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + (body if method != "HEAD" else b"")
    await endpoint.send_all(client, response)
