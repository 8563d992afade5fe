"""The USR2 hand-off and what systemd is told, without processes."""

from __future__ import annotations

import pytest

from supervisor.arbiter import upgrade
from supervisor.arbiter.lifecycle import Pool, WorkerRecord
from supervisor.arbiter.systemd import SystemdLink
from supervisor.commands.watch import Sample, frame
from supervisor.commands.wire import Status, Totals, WorkerStatus
from supervisor.errors import ConfigError
from supervisor.pool import WorkerState
from supervisor.system.sdnotify import Notifier


def test_the_handoff_round_trips_and_a_bad_one_is_one_line() -> None:
    handoff = upgrade.Handoff(old_pid=10, listeners=(3, 4), metrics=None, ready=7)
    assert upgrade.decode(handoff.encode()) == handoff
    env = {upgrade.ENV: handoff.encode(), "PATH": "/bin"}
    assert upgrade.take_handoff(env) == handoff
    assert env == {"PATH": "/bin"}  # gone: workers and later upgrades never see it
    assert upgrade.take_handoff(env) is None
    for bad in ("", "{}", '{"from": "x", "listeners": [], "metrics": null, "ready": 1}'):
        with pytest.raises(ConfigError) as info:
            upgrade.decode(bad)
        assert "\n" not in str(info.value) and upgrade.ENV in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, None),
        ({"pending": 42}, "an upgrade is already in progress (new supervisor 42)"),
        ({"taking_over": 9}, "still taking over from supervisor 9"),
        ({"stopping": True}, "stopping"),
        ({"pid": 1}, "PID 1"),
        ({"command": None}, "supervisor.run()"),
    ],
)
def test_why_an_upgrade_is_refused(kwargs: dict[str, object], words: str | None) -> None:
    args: dict[str, object] = {
        "pid": 100,
        "command": ["python", "-m", "supervisor"],
        "stopping": False,
        "pending": None,
    }
    args.update(kwargs)
    refusal = upgrade.why_not(**args)  # type: ignore[arg-type]
    assert refusal == words if words is None else words in str(refusal)


def test_the_command_line_is_the_one_that_started_us() -> None:
    argv = ["python3", "-X", "dev", "-m", "supervisor", "app:app", "-w", "2"]
    assert upgrade.command_line(argv, "/venv/bin/python3") == ["/venv/bin/python3", *argv[1:]]


class FakeNotifier(Notifier):
    def __init__(self, watchdog: float | None = None) -> None:
        super().__init__({"NOTIFY_SOCKET": "/run/test/notify"})
        self.watchdog_interval = watchdog
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True

    def tags(self) -> list[str]:
        keep = ("READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1")
        return [f for m in self.sent for f in m if f in keep or f.startswith("MAINPID=")]


def pool_of(*states: tuple[int, WorkerState], generation: int = 1) -> Pool:
    pool = Pool(target=len(states), batch=1, generation=generation)
    for pid, (gen, state) in enumerate(states, start=100):
        pool.workers[pid] = WorkerRecord(pid=pid, generation=gen, started_at=0.0, channel=None)
        pool.workers[pid].state = state
    return pool


def test_ready_once_served_then_reloading_and_ready_around_a_roll() -> None:
    notifier = FakeNotifier()
    link = SystemdLink(notifier)
    booting = pool_of((1, WorkerState.BOOTING), (1, WorkerState.BOOTING))
    link.tick(booting, stopping=False, healthy=True, now=0.0)
    assert notifier.tags() == []
    serving = pool_of((1, WorkerState.SERVING), (1, WorkerState.SERVING))
    serving.served = True
    link.tick(serving, stopping=False, healthy=True, now=1.0)
    assert notifier.tags() == ["READY=1"]
    rolling = pool_of((1, WorkerState.SERVING), (2, WorkerState.BOOTING), generation=2)
    rolling.served = True
    link.tick(rolling, stopping=False, healthy=True, now=2.0)
    link.tick(rolling, stopping=False, healthy=True, now=3.0)
    assert notifier.tags() == ["READY=1", "RELOADING=1"]
    rolled = pool_of((2, WorkerState.SERVING), (2, WorkerState.SERVING), generation=2)
    rolled.served = True
    link.tick(rolled, stopping=False, healthy=True, now=4.0)
    assert notifier.tags() == ["READY=1", "RELOADING=1", "READY=1"]
    # A roll that ended between two ticks is still announced, and ended.
    quick = pool_of((3, WorkerState.SERVING), (3, WorkerState.SERVING), generation=3)
    quick.served = True
    link.tick(quick, stopping=False, healthy=True, now=5.0)
    assert notifier.tags()[3:] == ["RELOADING=1", "READY=1"]
    link.stopped(quick)
    link.tick(quick, stopping=True, healthy=True, now=6.0)
    assert notifier.tags()[5:] == ["STOPPING=1"]


def test_the_watchdog_pings_only_while_healthy_and_serving() -> None:
    notifier = FakeNotifier(watchdog=1.0)
    link = SystemdLink(notifier)
    serving = pool_of((1, WorkerState.SERVING))
    serving.served = True
    link.tick(serving, stopping=False, healthy=True, now=0.0)
    link.tick(serving, stopping=False, healthy=True, now=0.5)  # within the interval
    link.tick(serving, stopping=False, healthy=False, now=1.5)  # the loop was stalled
    none = pool_of((1, WorkerState.BOOTING))
    none.served = True
    link.tick(none, stopping=False, healthy=True, now=3.0)  # no worker serves
    assert notifier.tags().count("WATCHDOG=1") == 1
    link.tick(serving, stopping=False, healthy=True, now=4.0)
    assert notifier.tags().count("WATCHDOG=1") == 2


def test_a_successor_is_quiet_until_handed_over_and_the_old_one_after() -> None:
    notifier = FakeNotifier()
    successor = SystemdLink(notifier, successor=True)
    serving = pool_of((1, WorkerState.SERVING))
    serving.served = True
    successor.tick(serving, stopping=False, healthy=True, now=0.0)
    successor.stopped(serving)  # failed before it served: systemd never heard of it
    assert notifier.sent == []
    old_notifier = FakeNotifier()
    old = SystemdLink(old_notifier)
    old.tick(serving, stopping=False, healthy=True, now=0.0)
    old.hand_over(4242, "upgraded")
    old.stopped(serving)
    old.tick(serving, stopping=True, healthy=True, now=1.0)
    assert old_notifier.tags() == ["READY=1", "MAINPID=4242", "READY=1"]


def test_each_batch_of_a_roll_moves_systemds_deadline() -> None:
    notifier = FakeNotifier()
    link = SystemdLink(notifier, budget=95.0)
    served = pool_of((1, WorkerState.SERVING), (1, WorkerState.SERVING))
    served.served = True
    link.tick(served, stopping=False, healthy=True, now=0.0)
    first = pool_of((1, WorkerState.SERVING), (1, WorkerState.SERVING), generation=2)
    first.workers[200] = WorkerRecord(pid=200, generation=2, started_at=0.0, channel=None)
    first.served = True
    link.tick(first, stopping=False, healthy=True, now=1.0)
    second = pool_of((2, WorkerState.SERVING), (1, WorkerState.SERVING), generation=2)
    second.workers[201] = WorkerRecord(pid=201, generation=2, started_at=0.0, channel=None)
    second.served = True
    link.tick(second, stopping=False, healthy=True, now=2.0)
    link.tick(second, stopping=False, healthy=True, now=3.0)  # the same batch
    extends = [f for m in notifier.sent for f in m if f.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extends == ["EXTEND_TIMEOUT_USEC=95000000"] * 2


def test_watch_rates_come_from_two_samples() -> None:
    def status(requests: dict[int, int], total: int) -> Status:
        workers = [
            WorkerStatus(p, 1, "serving", 5.0, r, 0, 1, 1 << 20, 0.1, None)
            for p, r in requests.items()
        ]
        totals = Totals(len(workers), total, 0, len(workers) << 20, {"crash": 1})
        return Status(7, "a:app", "i", 9.0, 2, 1, None, workers, totals, "1.2.3")

    first = Sample(status({10: 100, 11: 50}, 150), at=0.0, cpu={10: 1.0, 11: None})
    second = Sample(status({10: 300, 12: 0}, 400), at=2.0, cpu={10: 1.5, 12: 0.0})
    assert frame(None, first)[2].split()[4] == "-"  # no rate from one sample
    lines = frame(first, second)
    assert lines[0].startswith("supervisor 7  version 1.2.3")
    row = lines[2].split()
    assert (row[0], row[4], row[-1]) == ("10", "100.0", "25.0")  # 200 req / 2 s; 0.5 s CPU / 2 s
    new = lines[3].split()
    assert (new[0], new[4], new[-1]) == ("12", "-", "-")  # not in the first sample
    assert lines[4].startswith("total: 125.0 req/s, 400 requests") and "CPU 25.0%" in lines[4]
    assert lines[4].endswith("restarts: crash 1")
