"""The service's own counters, as prometheus_client metrics on the default registry.

Under the supervisor serving metrics (``--metrics-bind`` / ``--metrics-path``;
the launcher turns it on) every worker's values live in memory the
supervisor owns and are pooled there: ``GET /metrics`` on any worker then
returns the pool-wide page (every worker's ``fastagentic_*``, plus the
supervisor's own families). Under uvicorn or gunicorn it is this process's
registry. The instance id is a label; no per-worker pid label.
Queue-wide numbers (stream length, pending) come from the queue backend itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import REGISTRY, Counter, Gauge, generate_latest

logger = logging.getLogger("app")

COUNTERS: dict[str, str] = {
    "requests": "HTTP requests answered",
    "tasks_queued": "Agent tasks accepted and queued",
    "tasks_done": "Agent tasks completed",
    "tasks_failed": "Agent tasks that failed after all attempts",
    "tasks_retried": "LLM calls retried after an error",
    "tasks_reclaimed": "Tasks reclaimed from a consumer that stopped answering",
    "tasks_requeued": "Open tasks queued again from Postgres because Redis lost their message",
    "rate_limited": "Requests refused by the per-user rate limit",
    "overloaded": "Requests refused by --max-concurrent",
    "backend_unavailable": "Requests answered 503 because Redis or Postgres was down",
    "streams": "SSE streams started",
    "streams_reconnect": "SSE streams ended early with a reconnect event (drain)",
}
GAUGES: dict[str, str] = {
    "streams_active": "SSE streams open now",
    "tasks_running": "Tasks being processed now",
    "requests_in_flight": "HTTP requests in flight, excluding /health, /ready, /metrics",
}
_families: dict[str, Counter | Gauge] = {}


def families() -> dict[str, Counter | Gauge]:
    """The service's metric families, made once per process (the registry is global)."""
    if not _families:
        for name, help_text in COUNTERS.items():
            _families[name] = Counter(f"fastagentic_{name}", help_text, ["instance_id"])
        for name, help_text in GAUGES.items():
            # Summed over live workers; a dead worker's streams are not open any more.
            _families[name] = Gauge(
                f"fastagentic_{name}", help_text, ["instance_id"], multiprocess_mode="livesum"
            )
    return _families


class Metrics:
    """One service's counters: plain integers for its own reads, prometheus_client for /metrics."""

    def __init__(self, instance_id: str = "") -> None:
        self.values: dict[str, int] = dict.fromkeys([*COUNTERS, *GAUGES], 0)
        self._series = {name: family.labels(instance_id) for name, family in families().items()}

    def inc(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount
        self._series[name].inc(amount)

    def dec(self, name: str, amount: int = 1) -> None:
        self.values[name] -= amount
        self._series[name].dec(amount)  # type: ignore[union-attr]  # gauges only

    def set(self, name: str, value: int) -> None:
        self.values[name] = value
        self._series[name].set(value)  # type: ignore[union-attr]  # gauges only

    def __getitem__(self, name: str) -> int:
        return self.values[name]


async def render(instance_id: str, extra_gauges: Mapping[str, float] | None = None) -> str:
    """The pool-wide page when the supervisor pools metrics, else this process's registry."""
    from supervisor import pooled_metrics  # noqa: PLC0415 - only when /metrics is asked

    try:
        text = await pooled_metrics()
    except Exception as exc:  # the supervisor is going away, or its control socket is off
        logger.warning("Pool-wide metrics unavailable (%s); this worker's own follow", exc)
        text = None
    if text is None:
        text = generate_latest(REGISTRY).decode()
    lines = [text.rstrip("\n")]
    for name, value in (extra_gauges or {}).items():
        metric = f"fastagentic_{name}"
        lines += [f"# TYPE {metric} gauge", f'{metric}{{instance_id="{_escape(instance_id)}"}}']
        lines[-1] += f" {value:g}"
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
