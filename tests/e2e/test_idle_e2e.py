"""A steady supervisor barely wakes, and still hears at once what cannot wait."""

from __future__ import annotations

import re
import time

import httpx

from tests.conftest import StartSupervisor
from tests.supervisor_process import wait_for

HELLO = "tests.apps.hello:app"


def _wakeups(pid: int) -> int:
    """Times the process went to sleep by itself (each wait in epoll is one)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


def test_a_steady_supervisor_wakes_about_once_a_second_whatever_its_workers(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(HELLO, "-w", "4")
    sup.wait_serving(4, timeout=20)
    time.sleep(2.5)  # the pool settles: the tick goes to once a second, heartbeats wait for it
    before, started = _wakeups(sup.pid), time.monotonic()
    time.sleep(5)
    woke, elapsed = _wakeups(sup.pid) - before, time.monotonic() - started
    # Each of the 4 workers sends a heartbeat a second: read as they came, that would be
    # 5 wakeups a second; on the tick it is one (a little slack for the odd extra one).
    assert woke <= elapsed * 1.5 + 2, f"{woke} wakeups in {elapsed:.1f}s"
    assert sup.get("/").status_code == 200


def test_a_steady_pool_recycles_at_max_requests_at_once(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(HELLO, "-w", "1", "--max-requests", "20", "--max-requests-jitter", "0")
    [worker] = sup.wait_serving(1, timeout=20)
    time.sleep(2.5)  # steady: heartbeats are read on the tick
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            assert client.get(sup.url + "/").status_code == 200
    reached = time.monotonic()
    # The worker nudges the supervisor: the replacement is forked at once, not on the tick.
    booting = re.compile(rf"Booting worker (?!{worker}\b)\d+")
    wait_for(lambda: booting.search(sup.log()), 5, interval=0.01, message="replacement forked")
    assert time.monotonic() - reached < 0.8, sup.log()
    wait_for(lambda: len(sup.serving_pids() - {worker}) == 1, 10, message="replacement serving")
