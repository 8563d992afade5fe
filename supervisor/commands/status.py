"""`python -m supervisor status`: the worker table a person reads."""

from __future__ import annotations

from supervisor.commands.wire import Status
from supervisor.config import format_size


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(status: Status) -> str:
    lines = [
        f"supervisor {status.pid}"
        + (f"  version {status.version}" if status.version else "")
        + f"  app {status.app}  instance {status.instance_id}  "
        f"up {_age(status.uptime_s)}  workers {status.totals.workers}/{status.target_workers}"
        f"  generation {status.generation}"
        + (f"  STOPPING ({status.stopping})" if status.stopping else ""),
        "",
        f"{'PID':>8}  {'GEN':>3}  {'STATE':<9}  {'AGE':>7}  {'REQUESTS':>9}  {'IN-FLIGHT':>9}  "
        f"{'WS':>4}  {'STREAMS':>7}  {'RSS':>10}  NOTE",
    ]
    for w in status.workers:
        note = f"retiring: {w.retiring}" if w.retiring else ""
        lines.append(
            f"{w.pid:>8}  {w.generation:>3}  {w.state:<9}  {_age(w.age_s):>7}  {w.requests:>9}  "
            f"{w.in_flight:>9}  {w.websockets:>4}  {w.streams:>7}  {format_size(w.rss_bytes):>10}"
            f"  {note}".rstrip()
        )
    restarts = ", ".join(f"{k} {v}" for k, v in status.totals.restarts.items()) or "none"
    lines += [
        "",
        f"total: {status.totals.requests} requests served, {status.totals.in_flight} in flight"
        f" ({status.totals.websockets} websockets, {status.totals.streams} streams), "
        f"RSS {format_size(status.totals.rss_bytes)}; restarts: {restarts}",
    ]
    if status.rollouts or status.rollout:
        results = ", ".join(f"{k} {v}" for k, v in status.rollouts.items()) or "none yet"
        lines.append(f"rollouts: {results}" + (f"; {status.rollout}" if status.rollout else ""))
    return "\n".join(lines)
