"""The control socket's wire format: one JSON line in (a Request), one JSON document out.

Shared by the supervisor's server (supervisor.endpoints.control) and the
clients (``python -m supervisor status|scale|reload|stop``, and a worker
serving --metrics-path).
"""

from __future__ import annotations

import msgspec

from supervisor.pool import PoolSnapshot, StopMode

REQUEST_LIMIT = 4096
CLIENT_TIMEOUT = 5.0


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    command: str
    workers: int | None = None  # scale
    fast: bool = False  # stop


class WorkerStatus(msgspec.Struct):
    pid: int
    generation: int
    state: str
    age_s: float
    requests: int
    in_flight: int
    connections: int
    rss_bytes: int
    last_beat_s: float
    retiring: str | None
    websockets: int = 0
    streams: int = 0


class Totals(msgspec.Struct):
    workers: int
    requests: int
    in_flight: int
    rss_bytes: int
    restarts: dict[str, int]
    websockets: int = 0
    streams: int = 0


class Status(msgspec.Struct):
    pid: int
    app: str
    instance_id: str
    uptime_s: float
    target_workers: int
    generation: int
    stopping: str | None
    workers: list[WorkerStatus]
    totals: Totals
    version: str = ""
    boot_failing: str | None = None  # new workers fail to boot while none serve


class ErrorReply(msgspec.Struct):
    error: str


class Done(msgspec.Struct):
    """A command was carried out; ``message`` is the line the client prints."""

    message: str


class MetricsReply(msgspec.Struct):
    """The pool's Prometheus text, for a worker serving --metrics-path."""

    metrics: str


def status_of(snapshot: PoolSnapshot) -> Status:
    """What `status` shows, from the pool's snapshot."""
    workers = [
        WorkerStatus(
            pid=w.pid,
            generation=w.generation,
            state=w.state.value,
            age_s=w.age_s,
            requests=w.requests,
            in_flight=w.in_flight,
            connections=w.connections,
            rss_bytes=w.rss_bytes,
            last_beat_s=w.last_beat_s,
            retiring=str(w.retiring) if w.retiring else None,
            websockets=w.websockets,
            streams=w.streams,
        )
        for w in snapshot.workers
    ]
    totals = Totals(
        workers=len(snapshot.live),
        requests=snapshot.total_requests(),
        in_flight=sum(w.in_flight for w in workers),
        rss_bytes=sum(w.rss_bytes for w in workers),
        restarts=snapshot.restarts,
        websockets=sum(w.websockets for w in workers),
        streams=sum(w.streams for w in workers),
    )
    return Status(
        pid=snapshot.pid,
        app=snapshot.app,
        instance_id=snapshot.instance_id,
        uptime_s=snapshot.uptime_s,
        target_workers=snapshot.target,
        generation=snapshot.generation,
        stopping=None if snapshot.stopping is StopMode.RUNNING else snapshot.stopping.value,
        workers=workers,
        totals=totals,
        version=snapshot.version,
        boot_failing=snapshot.boot_failing,
    )
