"""A worker's request counters: status classes and a duration histogram, as plain floats.

They travel to the supervisor in each heartbeat (and a final one at exit) and
are summed there over every worker, live and exited, so the pool's counters
never go backwards when a worker recycles.
"""

from __future__ import annotations

import bisect

# Prometheus' default buckets, which dashboards already expect.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKET_KEYS = tuple(f"duration_le_{bound}" for bound in DURATION_BUCKETS)
STATUS_KEYS = ("responses_1xx", "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx")

_STATUS = 0  # slots 0..4: 1xx..5xx
_BUCKET = 5  # slots 5..16: one per bucket, then +Inf (not cumulative here)
_SUM = _BUCKET + len(DURATION_BUCKETS) + 1
_REJECTED = _SUM + 1
_SIZE = _REJECTED + 1
# status code -> its class's slot, by list index (cheaper than arithmetic per request);
# anything outside 100-599 counts as a server error.
_SLOT = [4] * 100 + [klass for klass in range(5) for _ in range(100)]


class Counters:
    """Per-worker counters, updated once per finished exchange (a handful of list writes)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values = [0.0] * _SIZE

    def observe(self, status: int, seconds: float) -> None:
        # Three writes: the request count is the sum of the classes, derived when read.
        values = self.values
        values[_SLOT[status] if 0 <= status < 600 else 4] += 1
        values[_BUCKET + bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        values[_SUM] += seconds

    def rejected(self) -> None:
        self.values[_REJECTED] += 1

    def stats(self) -> dict[str, float]:
        """The additive snapshot a heartbeat carries (keys the supervisor's metrics read)."""
        values = self.values
        stats = dict(zip(STATUS_KEYS, values[_STATUS:_BUCKET], strict=True))
        stats.update(zip(BUCKET_KEYS, values[_BUCKET : _SUM - 1], strict=True))
        stats["duration_sum"] = values[_SUM]
        stats["duration_count"] = sum(values[_STATUS:_BUCKET])
        stats["rejected"] = values[_REJECTED]
        return stats
