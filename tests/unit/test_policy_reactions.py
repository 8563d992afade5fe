"""Every reaction of the policy, table by table, without fork: exits, checks, stops."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from supervisor.arbiter import policy
from supervisor.arbiter.actions import (
    BeginStop,
    BootFailing,
    Count,
    Drain,
    ExitCode,
    Failed,
    Finish,
    KeepServing,
    Kill,
    Log,
    Retire,
    Spawn,
)
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.pool import Reason, WorkerState

NOW = 100.0
CHECKS = policy.Checks(timeout_worker=30, timeout_boot=60, max_memory=500, max_memory_total=900)


def worker(pid: int = 7, state: WorkerState = WorkerState.SERVING, **fields: Any) -> WorkerRecord:
    record = WorkerRecord(
        pid=pid, generation=1, started_at=fields.pop("started_at", 0.0), channel=None
    )
    record.state = state
    record.last_beat = NOW
    if state is not WorkerState.BOOTING:
        record.serving_at = fields.pop("serving_at", 1.0)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def situation(**changes: Any) -> policy.Situation:
    base: dict[str, Any] = {
        "now": NOW,
        "stopping": False,
        "reload_mode": False,
        "others_serving": True,
        "pool_served": True,
        "already_shown": False,
        "rolling": (),
    }
    return policy.Situation(**{**base, **changes})


def kinds(actions: list[Any]) -> list[type]:
    return [type(action) for action in actions]


def logged(actions: list[Any]) -> list[tuple[int, str]]:
    return [(a.level, a.message) for a in actions if isinstance(a, Log)]


KILLED_9 = policy.Ended(-9, "killed by SIGKILL (out of memory, or killed by hand?)")
EXIT_0 = policy.Ended(0, "exited with code 0")
EXIT_1 = policy.Ended(1, "exited with code 1")
EXIT_3 = policy.Ended(3, "exited with code 3 (worker boot failure)")
EXIT_4 = policy.Ended(4, "exited with code 4 (app load failure)")


# A worker is gone: served-before x exit status x stopping x reload -----------------------

EXITS = [
    # (case, record fields, ended, situation changes, expected action types, exit/stop code)
    ("recycled, clean", {"leaving": Reason.MAX_REQUESTS}, EXIT_0, {}, [Count, Log], None),
    (
        "drained at stop, clean",
        {"leaving": Reason.SHUTDOWN},
        EXIT_0,
        {"stopping": True},
        [Count, Log],
        None,
    ),
    (
        "drained at stop, cut",
        {"leaving": Reason.SHUTDOWN},
        EXIT_1,
        {"stopping": True},
        [Count, Log, ExitCode],
        1,
    ),
    ("hung, killed", {"leaving": Reason.TIMEOUT}, KILLED_9, {}, [Count, Log], None),
    ("left on its own", {"leaving": Reason.LEFT}, EXIT_0, {}, [Count, Log], None),
    ("not drained, at stop", {}, KILLED_9, {"stopping": True}, [Log], None),
    ("served long, crashed", {"serving_at": 1.0}, KILLED_9, {}, [Count, Log], None),
    ("served briefly, crashed", {"serving_at": 99.5}, EXIT_1, {}, [Count, Log, Failed], None),
    ("served long, exited 0", {"serving_at": 1.0}, EXIT_0, {}, [Count, Log], None),
    ("served briefly, exited 0", {"serving_at": 99.5}, EXIT_0, {}, [Count, Log, Failed], None),
]


@pytest.mark.parametrize(("case", "fields", "ended", "changes", "expected", "code"), EXITS)
def test_exits_of_workers_that_served(
    case: str,
    fields: dict[str, Any],
    ended: policy.Ended,
    changes: dict[str, Any],
    expected: list[type],
    code: int | None,
) -> None:
    actions = policy.on_exit(worker(**fields), ended, situation(**changes))
    assert kinds(actions) == expected, case
    codes = [a.code for a in actions if isinstance(a, ExitCode)]
    assert codes == ([code] if code is not None else []), case


def test_a_crash_and_a_clean_exit_are_counted_by_their_own_reasons() -> None:
    crash = policy.on_exit(worker(), EXIT_1, situation())
    exited = policy.on_exit(worker(), EXIT_0, situation())
    assert Count(Reason.CRASH) in crash and Count(Reason.EXITED) in exited
    assert logged(crash)[0][0] == logging.ERROR and logged(exited)[0][0] == logging.WARNING


BOOTS = [
    # (case, situation changes, ended, expected action types, begin-stop code)
    (
        "first start: nothing ever served",
        {"others_serving": False, "pool_served": False},
        EXIT_3,
        [Log, Log, BeginStop],
        3,
    ),
    (
        "first start, import error",
        {"others_serving": False, "pool_served": False},
        EXIT_4,
        [Log, Log, BeginStop],
        4,
    ),
    ("a roll, siblings serve", {}, EXIT_3, [Log, Count, Failed], None),
    (
        "a roll, aborted",
        {"rolling": (2, 3)},
        EXIT_3,
        [Log, Count, Failed, KeepServing, KeepServing, Log],
        None,
    ),
    (
        "backend down after serving, none serve",
        {"others_serving": False},
        EXIT_3,
        [Log, Count, Failed, Log, BootFailing],
        None,
    ),
    (
        "--reload: a bad save",
        {"reload_mode": True, "others_serving": False, "pool_served": False},
        EXIT_4,
        [Log, BootFailing],
        None,
    ),
    ("shown before: said once", {"already_shown": True}, EXIT_3, [Count, Failed], None),
]


@pytest.mark.parametrize(("case", "changes", "ended", "expected", "code"), BOOTS)
def test_exits_of_workers_that_never_served(
    case: str, changes: dict[str, Any], ended: policy.Ended, expected: list[type], code: int | None
) -> None:
    booting = worker(state=WorkerState.BOOTING, boot_failure="ImportError: no module named x")
    actions = policy.on_exit(booting, ended, situation(**changes))
    assert kinds(actions) == expected, case
    stops = [a for a in actions if isinstance(a, BeginStop)]
    assert [s.code for s in stops] == ([code] if code else []), case
    assert all(s.fast for s in stops)


def test_an_aborted_roll_keeps_every_retiring_worker_serving() -> None:
    actions = policy.on_exit(worker(state=WorkerState.BOOTING), EXIT_3, situation(rolling=(2, 3)))
    assert [a.pid for a in actions if isinstance(a, KeepServing)] == [2, 3]
    assert "Rolling restart aborted" in logged(actions)[-1][1]


# The periodic checks ---------------------------------------------------------------------

CHECK_CASES = [
    ("a silent serving worker is hung", {"last_beat": 60.0}, {}, Kill, Reason.TIMEOUT),
    (
        "a silent draining worker is hung too",
        {"state": WorkerState.DRAINING, "last_beat": 60.0},
        {},
        Kill,
        Reason.TIMEOUT,
    ),
    (
        "silence across a supervisor stall is not",
        {"last_beat": 60.0},
        {"stalled": True},
        None,
        None,
    ),
    ("killed once, never again", {"last_beat": 60.0, "killed": True}, {}, None, None),
    (
        "boot overdue",
        {"state": WorkerState.BOOTING, "started_at": 30.0},
        {},
        Kill,
        Reason.BOOT_TIMEOUT,
    ),
    ("boot in time", {"state": WorkerState.BOOTING, "started_at": 50.0}, {}, None, None),
    (
        "drain past its deadline",
        {"state": WorkerState.DRAINING, "drain_deadline": 99.0, "leaving": Reason.RELOAD},
        {},
        Kill,
        Reason.RELOAD,
    ),
    ("max requests", {"max_requests": 10, "requests": 10}, {}, Retire, Reason.MAX_REQUESTS),
    ("memory", {"rss": 600}, {}, Retire, Reason.MEMORY),
    ("lifetime", {"max_lifetime": 50.0}, {}, Retire, Reason.LIFETIME),
    ("near the fd limit", {"wants_recycle": Reason.FD_LIMIT}, {}, Retire, Reason.FD_LIMIT),
    ("an allocation failed", {"wants_recycle": Reason.MEMORY_HARD}, {}, Retire, Reason.MEMORY_HARD),
    ("already retiring", {"rss": 600, "retiring": Reason.RELOAD}, {}, None, None),
]


@pytest.mark.parametrize(("case", "fields", "options", "kind", "reason"), CHECK_CASES)
def test_checks(
    case: str,
    fields: dict[str, Any],
    options: dict[str, Any],
    kind: type | None,
    reason: Reason | None,
) -> None:
    state = fields.pop("state", WorkerState.SERVING)
    actions = policy.check([worker(state=state, **fields)], NOW, CHECKS, **options)
    if kind is None:
        assert actions == [], case
        return
    (action,) = actions
    assert isinstance(action, kind) and action.reason is reason, case


def test_a_hung_worker_is_dumped_before_it_is_killed() -> None:
    (kill,) = policy.check([worker(last_beat=60.0)], NOW, CHECKS)
    assert isinstance(kill, Kill) and kill.dump and "is hung" in kill.why


def test_the_total_memory_ceiling_retires_the_largest_worker_once() -> None:
    small, big = worker(1, rss=450), worker(2, rss=480)  # each under 500, together over 900
    actions = policy.check([small, big], NOW, CHECKS)
    assert actions == [Retire(2, Reason.MEMORY_TOTAL, actions[0].detail)]  # type: ignore[union-attr]


# Stopping ------------------------------------------------------------------------------


def test_stop_finishes_when_every_worker_is_gone() -> None:
    stop = policy.StopState(fast=False, deadline=NOW + 10)
    assert policy.stop_step([], stop, NOW) == [Finish()]
    assert policy.stop_step([worker(state=WorkerState.STOPPED)], stop, NOW) == [Finish()]


def test_stop_waits_until_its_deadline_then_kills_each_worker_once() -> None:
    draining = worker(1, WorkerState.DRAINING, in_flight=2, leaving=Reason.SHUTDOWN)
    killed = worker(2, WorkerState.DRAINING, killed=True)
    assert policy.stop_step([draining], policy.StopState(False, NOW + 1), NOW) == []
    actions = policy.stop_step([draining, killed], policy.StopState(False, NOW - 1), NOW)
    assert kinds(actions) == [Log, ExitCode, Kill]
    assert actions[2] == Kill(1, Reason.SHUTDOWN, "")
    assert "(2 request(s) abandoned)" in logged(actions)[0][1]


# The pool against its target --------------------------------------------------------------


def test_pool_actions_drain_first_then_spawn() -> None:
    old = worker(1, retiring=Reason.RELOAD, started_at=0.0)
    new = worker(2, started_at=5.0)
    assert policy.pool_actions([old, new], 1, 1, may_spawn=True) == [Drain(1, Reason.RELOAD)]
    assert policy.pool_actions([], 3, 1, may_spawn=True) == [Spawn(3)]
    assert policy.pool_actions([], 3, 1, may_spawn=False) == []
