"""SIGUSR2 end to end: the supervisor replaces itself, listeners open throughout."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil

from supervisor._version import __version__
from tests.conftest import StartSupervisor
from tests.load import KeepAliveLoad
from tests.supervisor_process import SupervisorProcess, status_json, wait_for

HELLO = "tests.apps.hello:app"
_HANDED = re.compile(r"Upgrade: supervisor (\d+) serves; this one")


def successors(sup: SupervisorProcess) -> list[int]:
    """The new supervisors, in order, as each old one announced it."""
    return [int(m.group(1)) for m in _HANDED.finditer(sup.log())]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def serving_children(pid: int) -> set[int]:
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if c.status() != psutil.STATUS_ZOMBIE}


def upgrade(sup: SupervisorProcess, current: int, done: int) -> int:
    """USR2 to ``current``; the successor's pid once ``current`` has exited."""
    os.kill(current, signal.SIGUSR2)
    wait_for(lambda: len(successors(sup)) > done, 30, message=sup.log(), interval=0.1)
    new = successors(sup)[done]
    wait_for(lambda: gone(current), 40, message=f"old supervisor exits\n{sup.log()}")
    return new


def test_three_upgrades_under_keep_alive_load_fail_no_request(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor(HELLO, "-w", "2", "--pid", str(pid_file))
    first_workers = sup.wait_serving(2)
    current = sup.pid
    seen_workers = set(first_workers)
    with KeepAliveLoad(sup.url, connections=6, max_seconds=110) as load:
        load.wait_requests(200)
        for done in range(3):
            new = upgrade(sup, current, done)
            assert new != current and not gone(new)
            workers = wait_for(lambda n=new: serving_children(n), 10, message=sup.log())
            assert len(workers) == 2 and not workers & seen_workers
            seen_workers |= workers
            current = new
            before = load.result.ok
            load.wait_requests(before + 200)
    result = load.result
    assert result.failed == 0, (result.errors, sup.log())
    served_by = {int(pid) for pid in result.pids if pid.isdigit()}
    assert served_by & first_workers and served_by & serving_children(current)
    status = status_json("--pid", str(pid_file))
    assert status["pid"] == current and status["version"] == __version__
    assert pid_file.read_text().strip() == str(current)
    log = sup.log()
    assert log.count("Upgrade: taking over from supervisor") == 3
    assert "Traceback" not in log


def test_a_second_usr2_during_an_upgrade_is_refused(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(HELLO, "-w", "1")
    sup.wait_serving(1)
    sup.signal(signal.SIGUSR2)
    wait_for(lambda: "Received SIGUSR2: upgrading" in sup.log(), 10, message=sup.log())
    sup.signal(signal.SIGUSR2)
    line = "Received SIGUSR2: not upgrading: an upgrade is already in progress (new supervisor"
    wait_for(lambda: line in sup.log(), 10, message=sup.log())
    new = upgrade(sup, sup.pid, 0)
    assert sup.log().count("Upgrade: taking over from supervisor") == 1
    assert len(wait_for(lambda: serving_children(new), 10, message=sup.log())) == 1


def test_a_new_supervisor_that_cannot_start_leaves_the_old_one_serving(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\n")
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor(HELLO, "--config", str(config), "--pid", str(pid_file))
    workers = sup.wait_serving(2)
    config.write_text("workers = (\n")  # no longer loads
    sup.signal(signal.SIGUSR2)
    failed = "keeps serving (its log lines above say why)"
    wait_for(lambda: failed in sup.log(), 30, message=sup.log())
    log = sup.log()
    assert re.search(r"Upgrade failed: the new supervisor \d+ exited with code 2", log), log
    assert sup.proc.poll() is None and sup.serving_pids() == workers == sup.children()
    assert sup.get().status_code == 200
    assert pid_file.read_text().strip() == str(sup.pid)
    config.write_text("workers = 2\n")  # fixed: the next USR2 goes through
    new = upgrade(sup, sup.pid, 0)
    assert len(wait_for(lambda: serving_children(new), 10, message=sup.log())) == 2
    assert status_json("--pid", str(pid_file))["pid"] == new


def test_an_upgrade_after_the_app_broke_keeps_the_old_supervisor(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    sup = start_supervisor("tests.apps.faulty:app", "-w", "1", env={"FAIL_BOOT": str(marker)})
    workers = sup.wait_serving(1)
    marker.touch()  # new workers fail to boot from now on
    sup.signal(signal.SIGUSR2)
    wait_for(lambda: "Upgrade failed" in sup.log(), 60, message=sup.log(), interval=0.2)
    time.sleep(0.5)
    assert sup.proc.poll() is None and sup.serving_pids() == workers
    assert sup.get().status_code == 200


def test_a_stop_during_an_upgrade_stops_the_new_supervisor_too(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    sup = start_supervisor("tests.apps.faulty:app", "-w", "1", env={"FAIL_BOOT": str(marker)})
    sup.wait_serving(1)
    marker.touch()  # the new supervisor's workers cannot serve: it stays pending
    sup.signal(signal.SIGUSR2)
    started = re.compile(r"new supervisor (\d+) starts with the same listeners")
    match = wait_for(lambda: started.search(sup.log()), 10, message=sup.log())
    new = int(match.group(1))
    wait_for(lambda: "Upgrade: taking over from supervisor" in sup.log(), 20, message=sup.log())
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(20) == 0, sup.log()
    wait_for(lambda: gone(new), 15, message=f"the new supervisor stops too\n{sup.log()}")
    assert "the upgrade is abandoned" in sup.log()
    assert "Upgrade failed" not in sup.log()
