"""The supervisor's accounts: restarts by reason, what exited workers served, the exit
code, and crash-loop backoff."""

from __future__ import annotations

import msgspec

from supervisor.arbiter import policy
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import Reason


class Books(msgspec.Struct):
    """Counters that outlive the workers they count."""

    restarts: dict[str, int] = msgspec.field(default_factory=dict)
    exited_requests: int = 0
    exited_stats: dict[str, float] = msgspec.field(default_factory=dict)
    exit_code: int = 0

    def count(self, reason: Reason) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def close(self, worker: WorkerRecord) -> None:
        """A worker is gone: keep its final counts, so pool counters never go back."""
        self.exited_requests += worker.requests
        for key, value in worker.stats.items():
            self.exited_stats[key] = self.exited_stats.get(key, 0.0) + value

    def raise_exit(self, code: int) -> None:
        self.exit_code = self.exit_code or code


class Backoff(msgspec.Struct):
    """Crash-loop backoff: failures close together delay the next spawn, exponentially."""

    streak: int = 0
    last: float | None = None
    not_before: float = 0.0

    def failed(self, now: float) -> float:
        """Count a failure; the delay before the next spawn."""
        self.streak = policy.crash_streak(self.streak, self.last, now)
        self.last = now
        delay = policy.crash_backoff(self.streak)
        self.not_before = now + delay
        return delay

    def allows(self, now: float) -> bool:
        return now >= self.not_before

    def reset(self) -> None:
        self.streak = 0
        self.not_before = 0.0
