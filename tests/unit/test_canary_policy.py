"""The canary's judgement over synthetic windows, and the rollout's bookkeeping (no processes)."""

from __future__ import annotations

import os

import pytest

from supervisor.arbiter import actions as act_
from supervisor.arbiter import canary_policy as cp
from supervisor.arbiter.canary import Rollouts
from supervisor.arbiter.lifecycle import Pool, WorkerRecord
from supervisor.config import Config
from supervisor.errors import ConfigError
from supervisor.pool import Reason, WorkerState
from supervisor.worker.counters import Counters

LIMITS = cp.Limits(seconds=3.0, max_error_rate=0.05)
LATENCY = cp.Limits(seconds=3.0, max_error_rate=0.05, max_p99_ratio=2.0)


def traffic(requests: int, errors: int = 0, seconds: float = 0.002) -> cp.Traffic:
    """``requests`` answers, ``errors`` of them 5xx, each taking ``seconds``."""
    counters = Counters()
    for index in range(requests):
        counters.observe(500 if index < errors else 200, seconds)
    return cp.traffic_between({}, counters.stats())


OLD = traffic(3000, errors=3)  # 0.1% 5xx, 2 ms


@pytest.mark.parametrize(
    ("window", "limits", "outcome", "why"),
    [
        # Too early: the window has not run its length.
        (cp.Window(1.0, traffic(500), OLD), LIMITS, cp.Outcome.WAIT, ""),
        # Low traffic: more time is given, then the roll goes on unjudged by rates.
        (cp.Window(3.5, traffic(40, errors=20), OLD), LIMITS, cp.Outcome.WAIT, ""),
        (cp.Window(9.5, traffic(40, errors=20), OLD), LIMITS, cp.Outcome.PASSED, "too little"),
        # Equal rates: passes.
        (cp.Window(3.0, traffic(1000, errors=1), OLD), LIMITS, cp.Outcome.PASSED, "no worse"),
        # A small increase within the limit passes; 30% 500s do not.
        (cp.Window(3.0, traffic(1000, errors=40), OLD), LIMITS, cp.Outcome.PASSED, "no worse"),
        (cp.Window(3.0, traffic(1000, errors=300), OLD), LIMITS, cp.Outcome.ABORTED, "5xx share"),
        # Errors the old generation has too are not the new build's fault.
        (
            cp.Window(3.0, traffic(1000, errors=300), traffic(3000, errors=800)),
            LIMITS,
            cp.Outcome.PASSED,
            "no worse",
        ),
        # A slow but correct build: passes without a latency guard, aborts with one.
        (cp.Window(3.0, traffic(1000, seconds=0.2), OLD), LIMITS, cp.Outcome.PASSED, "no worse"),
        (cp.Window(3.0, traffic(1000, seconds=0.2), OLD), LATENCY, cp.Outcome.ABORTED, "p99"),
        # Under the guard, both fast: sub-5 ms differences are not judged.
        (cp.Window(3.0, traffic(1000, seconds=0.004), OLD), LATENCY, cp.Outcome.PASSED, "no"),
        # A crashing build: at once, whatever the traffic or the time.
        (
            cp.Window(0.0, cp.Traffic(), cp.Traffic(), crashed=1),
            LIMITS,
            cp.Outcome.ABORTED,
            "crash",
        ),
        (cp.Window(0.5, traffic(10), OLD, memory=1), LIMITS, cp.Outcome.ABORTED, "memory"),
    ],
)
def test_judge(window: cp.Window, limits: cp.Limits, outcome: cp.Outcome, why: str) -> None:
    verdict = cp.judge(window, limits)
    assert verdict.outcome is outcome
    assert why in verdict.why


def test_p99_is_read_from_the_histogram() -> None:
    assert cp.Traffic().p99() == 0.0
    fast = traffic(1000, seconds=0.002)
    assert 0.0 < fast.p99() <= 0.005
    slow = traffic(900, seconds=0.002) + traffic(100, seconds=0.3)
    assert 0.25 < slow.p99() <= 0.5  # the slowest tenth is past the 99th percentile
    assert traffic(10, seconds=30.0).p99() == 10.0  # above the last bound: at least 10 s


def test_traffic_between_two_heartbeats_is_the_difference() -> None:
    counters = Counters()
    counters.observe(200, 0.001)
    before = counters.stats()
    counters.observe(500, 0.001)
    counters.observe(200, 20.0)
    seen = cp.traffic_between(before, counters.stats())
    assert (seen.requests, seen.errors) == (2, 1)
    assert seen.buckets[0] == 1 and seen.buckets[-1] == 1


def test_verdict_line_has_the_numbers() -> None:
    window = cp.Window(3.2, traffic(400, errors=120), traffic(1200))
    verdict = cp.judge(window, LIMITS)
    line = cp.verdict_line(verdict, window, (1, 2))
    assert line.startswith("Canary aborted after 3.2s: 5xx share up 30.0% (limit 5.0%)")
    assert "5xx 30.0% new vs 0.0% old" in line
    assert "400 vs 1200 requests judged; rolling back to generation 1" in line


# The rollout's bookkeeping, on worker records ------------------------------------------


def _worker(pid: int, generation: int, state: WorkerState = WorkerState.SERVING) -> WorkerRecord:
    worker = WorkerRecord(pid=pid, generation=generation, started_at=0.0, channel=None)
    worker.state = state
    worker.serving_at = 0.0 if state is WorkerState.SERVING else None
    return worker


def _rolled(seconds: float = 3.0) -> tuple[Rollouts, Pool]:
    pool = Pool(target=2, batch=1)
    for pid in (1, 2):
        pool.workers[pid] = _worker(pid, 1)
    rollouts = Rollouts(Config(app="a:b", canary_seconds=seconds), pool)
    env = dict(os.environ)
    pool.roll()
    rollouts.begin(env, 1)
    return rollouts, pool


def test_a_canary_holds_the_roll_at_its_first_batch() -> None:
    rollouts, pool = _rolled()
    assert rollouts.hold([act_.Spawn(1)]) == [act_.Spawn(1)]
    pool.workers[3] = _worker(3, 2)
    held = rollouts.hold([act_.Drain(1, Reason.RELOAD), act_.Spawn(1)])
    assert held == []  # no old worker drains, no second new worker boots


def test_an_aborted_canary_drains_the_new_and_keeps_the_old() -> None:
    rollouts, pool = _rolled()
    pool.workers[3] = new = _worker(3, 2)
    rollouts.tick(10.0, stopping=False)  # the window starts
    counters = Counters()
    for index in range(200):
        counters.observe(500 if index % 10 < 3 else 200, 0.001)
    new.stats = counters.stats()
    decided = rollouts.tick(14.0, stopping=False)
    assert isinstance(decided[0], act_.Log) and "Canary aborted" in decided[0].message
    assert set(decided[1:]) == {
        act_.KeepServing(1),
        act_.KeepServing(2),
        act_.Drain(3, Reason.ROLLBACK),
    }
    assert pool.generation == 1  # what is forked from now on is the old build
    assert rollouts.results == {"aborted": 1}
    assert rollouts.hold([act_.Drain(1, Reason.RELOAD)]) == [act_.Drain(1, Reason.RELOAD)]


def test_a_crash_of_a_new_worker_aborts_at_the_next_tick() -> None:
    rollouts, pool = _rolled()
    pool.workers[3] = new = _worker(3, 2)
    del pool.workers[3]
    assert rollouts.on_exit(new) == []
    decided = rollouts.tick(1.0, stopping=False)
    assert "1 new worker(s) crashed" in str(decided[0])


def test_a_passed_canary_becomes_a_plain_roll_that_completes() -> None:
    rollouts, pool = _rolled()
    pool.workers[3] = new = _worker(3, 2)
    rollouts.tick(10.0, stopping=False)
    counters = Counters()
    for _ in range(200):
        counters.observe(200, 0.001)
    new.stats = counters.stats()
    decided = rollouts.tick(13.5, stopping=False)
    assert "Canary passed" in str(decided[0])
    assert rollouts.hold([act_.Drain(1, Reason.RELOAD)]) == [act_.Drain(1, Reason.RELOAD)]
    for pid in (1, 2):
        pool.workers[pid].state = WorkerState.STOPPED
    pool.workers[4] = _worker(4, 2)
    assert "Rolling restart complete: 2 worker(s) on generation 2" in str(
        rollouts.tick(20.0, stopping=False)
    )
    assert rollouts.results == {"completed": 1}


def test_nothing_is_judged_while_stopping() -> None:
    rollouts, pool = _rolled()
    pool.workers[3] = new = _worker(3, 2)
    rollouts.on_exit(new)
    assert rollouts.tick(1.0, stopping=True) == []


def test_a_roll_over_an_undecided_canary_rolls_back_to_the_generation_before_both() -> None:
    rollouts, pool = _rolled()
    pool.workers[3] = _worker(3, 2)  # the first canary, undecided
    env = dict(os.environ)
    pool.roll()  # a second SIGHUP: generation 3
    rollouts.begin(env, 2)
    pool.workers[4] = _worker(4, 3)
    del pool.workers[4]
    rollouts.on_exit(_worker(4, 3))  # generation 3's canary crashed
    decided = rollouts.tick(1.0, stopping=False)
    assert "rolling back to generation 1" in str(decided[0])
    assert set(decided[1:]) == {
        act_.KeepServing(1),
        act_.KeepServing(2),
        act_.Drain(3, Reason.ROLLBACK),
    }
    assert pool.generation == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ready_path": "ready"}, '--ready-path must start with "/"'),
        ({"canary_max_p99_ratio": 0.5}, "--canary-max-p99-ratio must be above 1"),
    ],
)
def test_settings_a_user_gets_wrong_are_one_clear_error(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(app="a:b", **settings)  # type: ignore[arg-type]


def test_the_defaults_keep_rolls_as_they_were() -> None:
    config = Config(app="a:b")
    assert (config.ready_path, config.canary_seconds) == (None, 0.0)
    assert (config.canary_max_error_rate, config.canary_max_p99_ratio) == (0.05, 0.0)
    rollouts = Rollouts(config, Pool(target=2, batch=1))
    rollouts.begin(dict(os.environ), 1)
    assert not rollouts.holding
    assert rollouts.hold([act_.Drain(1, Reason.RELOAD)]) == [act_.Drain(1, Reason.RELOAD)]
