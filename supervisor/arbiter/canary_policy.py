"""The canary's judgement, as pure functions: is the new generation worse than the old?

During a rolling restart with --canary-seconds, the first batch of new workers
serves beside the whole old generation; both see the same live traffic over
the same window. At the end of the window the new generation is compared
with the old one on what the workers already count (see
:mod:`supervisor.worker.counters`): the share of 5xx answers and the p99
latency read from the duration histogram. A new worker that crashes, or is
recycled for memory, ends the canary at once.

Judging needs traffic: before :data:`MIN_REQUESTS` requests have reached the
new workers, a share says little (3 errors in 10 requests is not 30%), so the
window is extended, up to :data:`EXTEND_FACTOR` times --canary-seconds; a roll
still that quiet then goes on, judged on crashes and memory only, and the
verdict line says so.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import msgspec

from supervisor.worker.counters import BUCKET_KEYS, DURATION_BUCKETS, STATUS_KEYS

MIN_REQUESTS = 100
EXTEND_FACTOR = 3.0
# Below the histogram's first bound (5 ms) latencies are not told apart: a ratio
# of two sub-5 ms p99s is noise, so the old p99 is taken as at least this.
P99_FLOOR = DURATION_BUCKETS[0]
_BUCKETS = len(BUCKET_KEYS) + 1  # the last one is above 10 s (+Inf)


class Traffic(msgspec.Struct, frozen=True):
    """Answers over a window: how many, how many 5xx, and the duration histogram
    (one count per bucket, not cumulative; the last bucket is above the last bound)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[float, ...] = (0.0,) * _BUCKETS

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float:
        """The 99th percentile duration in seconds, interpolated inside its bucket."""
        total = sum(self.buckets)
        if not total:
            return 0.0
        rank = 0.99 * total
        seen = 0.0
        for index, count in enumerate(self.buckets):
            if count and seen + count >= rank:
                if index >= len(DURATION_BUCKETS):
                    return DURATION_BUCKETS[-1]  # above the last bound: at least that
                low = DURATION_BUCKETS[index - 1] if index else 0.0
                high = DURATION_BUCKETS[index]
                return low + (high - low) * (rank - seen) / count
            seen += count
        return DURATION_BUCKETS[-1]

    def __add__(self, other: Traffic) -> Traffic:
        buckets = tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True))
        return Traffic(self.requests + other.requests, self.errors + other.errors, buckets)


def traffic_between(before: Mapping[str, float], after: Mapping[str, float]) -> Traffic:
    """A worker's traffic between two of its heartbeats' counters (cumulative)."""

    def delta(key: str) -> float:
        return max(after.get(key, 0.0) - before.get(key, 0.0), 0.0)

    requests = sum(delta(key) for key in STATUS_KEYS)
    buckets = [delta(key) for key in BUCKET_KEYS]
    # The +Inf bucket is what the counted buckets miss.
    buckets.append(max(requests - sum(buckets), 0.0))
    return Traffic(requests, delta("responses_5xx"), tuple(buckets))


def total(traffics: Iterable[Traffic]) -> Traffic:
    summed = Traffic()
    for traffic in traffics:
        summed = summed + traffic
    return summed


class Limits(msgspec.Struct, frozen=True):
    seconds: float  # --canary-seconds
    max_error_rate: float  # --canary-max-error-rate: allowed increase of the 5xx share
    max_p99_ratio: float = 0.0  # --canary-max-p99-ratio; 0: no latency guard
    min_requests: int = MIN_REQUESTS


class Window(msgspec.Struct, frozen=True):
    """What the canary saw so far."""

    elapsed: float  # seconds since the whole first batch served (0 before)
    new: Traffic
    old: Traffic
    crashed: int = 0  # new workers that died after serving
    memory: int = 0  # new workers recycled for memory


class Outcome(enum.StrEnum):
    WAIT = "wait"
    PASSED = "passed"
    ABORTED = "aborted"


class Verdict(msgspec.Struct, frozen=True):
    outcome: Outcome
    why: str = ""  # what decided it, for the verdict line


def judge(window: Window, limits: Limits) -> Verdict:
    """Wait, pass, or abort the roll, from what the canary saw."""
    if window.crashed:
        return Verdict(Outcome.ABORTED, f"{window.crashed} new worker(s) crashed")
    if window.memory:
        return Verdict(Outcome.ABORTED, f"{window.memory} new worker(s) recycled for memory")
    if window.elapsed < limits.seconds:
        return Verdict(Outcome.WAIT)
    new, old = window.new, window.old
    if new.requests < limits.min_requests:
        if window.elapsed < limits.seconds * EXTEND_FACTOR:
            return Verdict(Outcome.WAIT)  # more traffic, for a while
        return Verdict(
            Outcome.PASSED,
            f"too little traffic to judge ({new.requests:.0f} < {limits.min_requests} requests);"
            " no crash",
        )
    increase = new.error_share - old.error_share
    if increase > limits.max_error_rate:
        return Verdict(
            Outcome.ABORTED, f"5xx share up {increase:.1%} (limit {limits.max_error_rate:.1%})"
        )
    if limits.max_p99_ratio and old.requests:
        ceiling = max(old.p99(), P99_FLOOR) * limits.max_p99_ratio
        if new.p99() > ceiling:
            return Verdict(
                Outcome.ABORTED,
                f"p99 above {limits.max_p99_ratio:g}x the old generation's"
                f" ({new.p99() * 1000:.1f} > {ceiling * 1000:.1f} ms)",
            )
    return Verdict(Outcome.PASSED, "no worse than the old generation")


def verdict_line(verdict: Verdict, window: Window, generations: tuple[int, int]) -> str:
    """The one line an operator reads: outcome, why, and the numbers behind it."""
    old_generation, new_generation = generations
    new, old = window.new, window.old
    then = (
        f"rolling back to generation {old_generation}"
        if verdict.outcome is Outcome.ABORTED
        else f"the roll to generation {new_generation} continues"
    )
    return (
        f"Canary {verdict.outcome} after {window.elapsed:.1f}s: {verdict.why};"
        f" 5xx {new.error_share:.1%} new vs {old.error_share:.1%} old,"
        f" p99 {new.p99() * 1000:.1f} ms vs {old.p99() * 1000:.1f} ms,"
        f" {new.requests:.0f} vs {old.requests:.0f} requests judged; {then}"
    )
