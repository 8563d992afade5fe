"""Hooks a worker calls itself (issue 17): post_worker_init, worker_int, worker_exit.

A SIGINT sent to one worker makes it call worker_int and leave (it is replaced);
Ctrl-C on the terminal (SIGINT to the whole group) is the supervisor's graceful stop:
no worker_int, the in-flight request completes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, wait_for

APP = "tests.apps.hello:app"
# A gunicorn config whose hooks write a line each to {record}; the tests add their own.
RECORDING = """
import os
def _note(*words):
    with open({record!r}, "a") as out:
        out.write(" ".join(str(w) for w in words) + "\\n")
def post_fork(server, worker):
    worker.tag = "from-post-fork"
def worker_exit(server, worker):
    _note("worker_exit", os.getpid(), worker.pid, worker.alive)
def child_exit(server, worker):
    _note("child_exit", os.getpid(), worker.pid)
"""
HOOKS = (
    RECORDING
    + """
def post_worker_init(worker):
    _note("post_worker_init", os.getpid(), worker.pid, worker.tag)
def worker_int(worker):
    _note("worker_int", os.getpid(), worker.pid)
"""
)


def lines(record: Path) -> list[list[str]]:
    return [line.split() for line in record.read_text().splitlines()] if record.exists() else []


def start(
    start_supervisor: StartSupervisor, tmp_path: Path, *args: str
) -> tuple[SupervisorProcess, Path]:
    record = tmp_path / "hooks.log"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(HOOKS.format(record=str(record)))
    return start_supervisor(APP, "--config", str(config), *args), record


def test_sigint_to_one_worker_calls_worker_int_there_and_it_is_replaced(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, record = start(start_supervisor, tmp_path, "-w", "2")
    workers = sup.wait_serving(2)
    inits = {int(line[1]) for line in lines(record) if line[0] == "post_worker_init"}
    assert inits == workers  # in each worker, with what post_fork set on the same object
    assert all(line[3] == "from-post-fork" for line in lines(record) if line[2:3])
    victim = min(workers)
    os.kill(victim, signal.SIGINT)
    wait_for(lambda: victim not in sup.serving_pids() and len(sup.serving_pids()) == 2, 20)
    seen = lines(record)
    assert ["worker_int", str(victim), str(victim)] in seen
    assert ["worker_exit", str(victim), str(victim), "False"] in seen
    assert ["child_exit", str(sup.pid), str(victim)] in seen


def test_ctrl_c_on_the_group_is_a_graceful_stop_without_worker_int(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, record = start(start_supervisor, tmp_path, "-w", "2")
    sup.wait_serving(2)
    mark = tmp_path / "in-flight"
    answers: list[int] = []
    url = f"{sup.url}/sleep?s=2&mark={mark}"
    slow = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=20).status_code))
    slow.start()
    wait_for(mark.exists, 10, "the request in flight")
    os.killpg(sup.pid, signal.SIGINT)
    slow.join(20)
    assert answers == [200]
    assert sup.wait_exit(20) == 0, sup.log()
    assert not [line for line in lines(record) if line[0] == "worker_int"]
