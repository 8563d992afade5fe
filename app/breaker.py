"""A small circuit breaker: after N consecutive failures, fail fast for a while.

closed -> (threshold failures in a row) -> open -> (reset seconds) -> half-open:
one trial call; its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Pure bookkeeping; the caller asks ``allow()`` and reports the outcome."""

    def __init__(
        self, threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_seconds:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until a call is allowed again (0 when it is allowed now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.reset_seconds - self.clock())

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self._trial_running = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        self._trial_running = False
        self.failures += 1
        if self._state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self._state = BreakerState.OPEN
            self.opened_at = self.clock()
