"""gunicorn's worker_abort(worker) (issue 17): a worker the supervisor finds hung gets
SIGABRT; faulthandler dumps its stack, and then, when the interpreter gets control,
the worker calls worker_abort and worker_exit itself before it exits. A loop stuck in
C never gets control back: only the stack dump, as under gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
import psutil

from tests.conftest import StartSupervisor
from tests.e2e.test_worker_hooks_e2e import RECORDING, lines
from tests.supervisor_process import SupervisorProcess, wait_for

APP = "tests.apps.hello:app"
HOOKS = (
    RECORDING
    + """
def worker_abort(worker):
    _note("worker_abort", os.getpid(), worker.pid, worker.alive, worker.tag)
"""
)


def start(start_supervisor: StartSupervisor, tmp_path: Path) -> tuple[SupervisorProcess, Path]:
    record = tmp_path / "hooks.log"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(HOOKS.format(record=str(record)))
    sup = start_supervisor(APP, "--config", str(config), "-w", "1", "--timeout-worker", "2")
    return sup, record


def hang(sup: SupervisorProcess, path: str) -> threading.Thread:
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{sup.url}{path}", timeout=40)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_hung_in_python_calls_worker_abort_and_its_stack_is_dumped(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, record = start(start_supervisor, tmp_path)
    (victim,) = sup.wait_serving(1)
    caller = hang(sup, "/spin?s=30")
    wait_for(lambda: gone(victim), 15, message=f"the hung worker stopped\n{sup.log()}")
    log = wait_for(lambda: "stack dump" in sup.log() and sup.log(), 5, message=sup.log())
    assert f"Worker {victim} is hung" in log
    assert "hello.py" in log  # faulthandler's dump is still there, naming the spinning frame
    seen = wait_for(lambda: [w for w in lines(record) if w[0] != "child_exit"], 5, sup.log())
    # In the worker itself, on the persistent worker object, not alive any more, then
    # worker_exit on its way out; once each.
    assert seen == [
        ["worker_abort", str(victim), str(victim), "False", "from-post-fork"],
        ["worker_exit", str(victim), str(victim), "False"],
    ], log
    assert ["child_exit", str(sup.pid), str(victim)] in wait_for(
        lambda: lines(record)[2:], 5, message=sup.log()
    )
    assert len(sup.wait_serving(1)) == 1  # replaced
    caller.join(timeout=10)


def test_a_worker_stuck_in_c_gets_only_the_stack_dump(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, record = start(start_supervisor, tmp_path)
    (victim,) = sup.wait_serving(1)
    caller = hang(sup, "/cspin")
    wait_for(lambda: gone(victim), 15, message=f"the hung worker killed\n{sup.log()}")
    log = wait_for(lambda: "stack dump" in sup.log() and sup.log(), 5, message=sup.log())
    assert f"Worker {victim} is hung" in log and "hello.py" in log
    assert len(sup.wait_serving(1)) == 1
    # SIGKILLed: no Python ran in it after the SIGABRT, so neither hook (gunicorn alike).
    assert [w[0] for w in lines(record)] == ["child_exit"], log
    caller.join(timeout=10)


def test_sigabrt_sent_to_an_idle_worker_calls_worker_abort_there(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, record = start(start_supervisor, tmp_path)
    (victim,) = sup.wait_serving(1)
    os.kill(victim, signal.SIGABRT)
    wait_for(lambda: gone(victim), 10, message=sup.log())
    wait_for(lambda: len(lines(record)) >= 3, 5, message=sup.log())
    assert [w[:3] for w in lines(record)] == [
        ["worker_abort", str(victim), str(victim)],
        ["worker_exit", str(victim), str(victim)],
        ["child_exit", str(sup.pid), str(victim)],
    ]
    assert len(sup.wait_serving(1)) == 1
