"""The pure lifecycle decisions: recycle points, backoff, and the pool plan's invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.arbiter import policy
from supervisor.arbiter.lifecycle import InvalidTransition, RecycleReason, WorkerRecord, WorkerState


def worker(
    pid: int,
    state: WorkerState = WorkerState.SERVING,
    *,
    started: float = 0.0,
    retire: RecycleReason | None = None,
    **fields: float,
) -> WorkerRecord:
    record = WorkerRecord(pid=pid, generation=1, started_at=started, channel=None)
    record.state = state
    record.retire_reason = retire
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_jittered_limits_stay_in_range_and_differ() -> None:
    rng = random.Random(7)
    limits = [policy.worker_limits(1000, 100, 3600, 360, rng) for _ in range(50)]
    assert all(1000 <= lim.max_requests <= 1100 for lim in limits)
    assert all(3600 <= lim.max_lifetime <= 3960 for lim in limits)
    assert len({lim.max_requests for lim in limits}) > 10


def test_no_limits_means_zero() -> None:
    assert policy.worker_limits(0, 0, 0, 0, random.Random()) == policy.WorkerLimits(0, 0.0)


def test_recycle_reason_order_and_thresholds() -> None:
    w = worker(1, max_requests=10, requests=10, rss=600, max_lifetime=5.0)
    assert policy.recycle_reason(w, now=10, max_memory=500) is RecycleReason.MAX_REQUESTS
    w.requests = 9
    assert policy.recycle_reason(w, now=10, max_memory=500) is RecycleReason.MEMORY
    assert policy.recycle_reason(w, now=10, max_memory=None) is RecycleReason.LIFETIME
    assert policy.recycle_reason(w, now=4, max_memory=None) is None


def test_memory_total_victim_is_the_largest_serving_worker() -> None:
    small, big = worker(1, rss=100), worker(2, rss=300)
    retiring = worker(3, rss=900, retire=RecycleReason.MEMORY)
    assert policy.memory_total_victim([small, big], 500) is None
    assert policy.memory_total_victim([small, big, retiring], 500) is big
    assert policy.memory_total_victim([small, big], None) is None


def test_hung_and_boot_overdue_depend_on_state() -> None:
    serving = worker(1, last_beat=0.0)
    booting = worker(2, WorkerState.BOOTING, last_beat=0.0)
    assert policy.is_hung(serving, now=31, timeout=30)
    assert not policy.is_hung(serving, now=29, timeout=30)
    assert not policy.is_hung(booting, now=100, timeout=30)
    assert policy.boot_overdue(booting, now=61, timeout=60)
    assert not policy.boot_overdue(serving, now=61, timeout=60)


def test_crash_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [policy.crash_backoff(streak) for streak in range(1, 12)]
    assert delays[:5] == [0.0, 0.1, 0.2, 0.4, 0.8]
    assert max(delays) == policy.CRASH_BACKOFF_CAP
    assert delays == sorted(delays)


def test_crash_streak_resets_after_a_calm_period() -> None:
    assert policy.crash_streak(0, None, 10.0) == 1
    assert policy.crash_streak(3, 10.0, 10.5) == 4
    assert policy.crash_streak(3, 10.0, 10.0 + policy.STABLE_AFTER) == 1
    assert policy.in_crash_loop(0.5)
    assert not policy.in_crash_loop(policy.STABLE_AFTER)


def test_state_machine_refuses_going_backwards() -> None:
    w = worker(1, WorkerState.DRAINING)
    with pytest.raises(InvalidTransition):
        w.transition(WorkerState.SERVING)
    w.transition(WorkerState.STOPPED)
    assert not w.live


def test_plan_fills_an_empty_pool() -> None:
    assert policy.plan([], 4, 1, may_spawn=True) == policy.Plan(4, ())
    assert policy.plan([], 4, 1, may_spawn=False) == policy.Plan(0, ())


def test_plan_starts_the_replacement_before_draining() -> None:
    old = worker(1, retire=RecycleReason.MAX_REQUESTS)
    other = worker(2)
    first = policy.plan([old, other], 2, 1, may_spawn=True)
    assert first == policy.Plan(1, ())  # nothing drains until the new one serves
    new_booting = worker(3, WorkerState.BOOTING, started=1)
    assert policy.plan([old, other, new_booting], 2, 1, may_spawn=True) == policy.Plan(0, ())
    new_serving = worker(3, started=1)
    decided = policy.plan([old, other, new_serving], 2, 1, may_spawn=True)
    assert decided.drain == ((old, RecycleReason.MAX_REQUESTS),)
    assert decided.spawn == 0


def test_plan_rolls_one_batch_at_a_time() -> None:
    pool = [worker(i, started=i, retire=RecycleReason.RELOAD) for i in range(4)]
    assert policy.plan(pool, 4, 1, may_spawn=True).spawn == 1
    assert policy.plan(pool, 4, 2, may_spawn=True).spawn == 2


def test_plan_scales_down_booting_first_then_oldest() -> None:
    old, young = worker(1, started=0), worker(2, started=5)
    booting = worker(3, WorkerState.BOOTING, started=9)
    decided = policy.plan([old, young, booting], 1, 1, may_spawn=True)
    assert [w.pid for w, _ in decided.drain] == [3, 1]
    assert all(reason is RecycleReason.SCALE_DOWN for _, reason in decided.drain)


pools = st.lists(
    st.tuples(
        st.sampled_from([WorkerState.BOOTING, WorkerState.SERVING, WorkerState.DRAINING]),
        st.booleans(),
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(pool=pools, target=st.integers(1, 6), batch=st.integers(1, 3))
def test_plan_never_drops_serving_capacity_below_target(
    pool: list[tuple[WorkerState, bool]], target: int, batch: int
) -> None:
    workers = [
        worker(i, state, started=i, retire=RecycleReason.RELOAD if retiring else None)
        for i, (state, retiring) in enumerate(pool)
    ]
    decided = policy.plan(workers, target, batch, may_spawn=True)
    serving = [w for w in workers if w.state is WorkerState.SERVING]
    drained = {w.pid for w, _ in decided.drain}
    retiring_drained = [w for w, r in decided.drain if r is not RecycleReason.SCALE_DOWN]
    # A retiree drains only while at least `target` other workers keep serving.
    if retiring_drained:
        assert len([w for w in serving if w.pid not in drained]) >= target
    assert all(w.live for w, _ in decided.drain)
    assert len(drained) == len(decided.drain)
    live = [w for w in workers if w.live]
    assert len(live) - len(decided.drain) + decided.spawn <= max(target + batch, len(live))
