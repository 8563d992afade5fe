"""The service's own counters, rendered as Prometheus text.

Counters are this worker's (labelled with its pid): a scrape through the
shared socket reaches one worker, and Prometheus sums the series. Queue-wide
numbers (stream length, pending) come from the queue backend itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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
    "tasks_running": "Tasks this worker is processing now",
    "requests_in_flight": "HTTP requests in flight, excluding /health, /ready, /metrics",
}


class Metrics:
    """Plain integer attributes: an increment is the whole cost on the hot path."""

    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys([*COUNTERS, *GAUGES], 0)

    def inc(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def dec(self, name: str, amount: int = 1) -> None:
        self.values[name] -= amount

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def render(self, instance_id: str, extra_gauges: Mapping[str, float] | None = None) -> str:
        labels = f'instance_id="{_escape(instance_id)}",worker_pid="{os.getpid()}"'
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            metric = f"fastagentic_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            lines.append(f"{metric}{{{labels}}} {self.values[name]}")
        for name, help_text in GAUGES.items():
            metric = f"fastagentic_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines.append(f"{metric}{{{labels}}} {self.values[name]}")
        for name, value in (extra_gauges or {}).items():
            metric = f"fastagentic_{name}"
            lines += [f"# TYPE {metric} gauge", f'{metric}{{instance_id="{_escape(instance_id)}"}}']
            lines[-1] += f" {value:g}"
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
