"""gunicorn's pre_exec(server) on SIGUSR2 (issue 17): in the fork of the old supervisor that
becomes the new one, right before exec, with the ``server`` object the other hooks got."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import StartSupervisor
from tests.supervisor_process import wait_for
from tests.test_upgrade_e2e import serving_children, upgrade

APP = "tests.apps.hello:app"
HOOKS = """
import json, os
def on_starting(server):
    server.tag = "from-on-starting-" + str(os.getpid())
def pre_exec(server):
    with open({record!r}, "a") as out:
        out.write(json.dumps({{
            "pid": os.getpid(), "ppid": os.getppid(), "server_pid": server.pid,
            "tag": getattr(server, "tag", None), "workers": sorted(server.WORKERS),
        }}) + "\\n")
    server.log.info("Forked child, re-executing.")
"""
FAILING = """
def pre_exec(server):
    raise RuntimeError("pre_exec broke")
"""


def entries(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_usr2_calls_pre_exec_in_the_fork_that_becomes_the_new_supervisor(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    record = tmp_path / "pre_exec.jsonl"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(HOOKS.format(record=str(record)))
    sup = start_supervisor(APP, "--config", str(config), "-w", "2")
    workers = sup.wait_serving(2)
    assert entries(record) == []  # not at start
    old = sup.pid
    new = upgrade(sup, old, 0)
    assert len(wait_for(lambda: serving_children(new), 10, message=sup.log())) == 2
    (seen,) = entries(record)  # once, by the old supervisor's upgrade only
    # gunicorn's moment: a child of the old master, which then execs (same pid).
    assert seen["pid"] == new and seen["ppid"] == old == seen["server_pid"]
    assert seen["tag"] == f"from-on-starting-{old}"  # the persistent server object
    assert set(seen["workers"]) == workers
    log = sup.log()
    assert log.count("Forked child, re-executing.") == 1, log
    assert log.count("Received SIGUSR2: upgrading") == 1, log
    assert Path(f"/proc/{new}").exists() and "Traceback" not in log


def test_a_failing_pre_exec_is_logged_and_the_upgrade_goes_on(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(FAILING)
    sup = start_supervisor(APP, "--config", str(config), "-w", "1")
    sup.wait_serving(1)
    new = upgrade(sup, sup.pid, 0)
    assert len(wait_for(lambda: serving_children(new), 10, message=sup.log())) == 1
    log = sup.log()
    assert "The pre_exec hook" in log and "pre_exec broke" in log, log
