"""Process titles (issue 17): ps shows the master, each worker, and who is draining."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import psutil

from tests.conftest import StartSupervisor
from tests.supervisor_process import wait_for

APP = "tests.apps.hello:app"


def titled(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline()).strip()


def test_master_and_workers_are_titled_and_a_draining_worker_says_so(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor(APP, "-w", "2", "--proc-name", "billing-api")
    workers = sup.wait_serving(2)
    assert titled(sup.pid) == "supervisor: master [billing-api]"
    numbers = sorted(titled(pid) for pid in workers)
    assert numbers == ["supervisor: worker 1 [billing-api]", "supervisor: worker 2 [billing-api]"]

    mark = tmp_path / "in-flight"
    slow = threading.Thread(
        target=lambda: httpx.get(f"{sup.url}/sleep?s=3&mark={mark}", timeout=20), daemon=True
    )
    slow.start()
    wait_for(mark.exists, 10, "the slow request in flight")
    busy = int(mark.read_text())
    sup.signal(signal.SIGTERM)
    wait_for(lambda: titled(busy).endswith("(draining)"), 5, "the worker's draining title")
    assert titled(busy).startswith("supervisor: worker ")
    assert titled(busy).endswith(" [billing-api] (draining)")
    assert titled(sup.pid) == "supervisor: master [billing-api] (draining)"
    slow.join(20)
    assert sup.wait_exit(20) == 0, sup.log()


def test_the_default_name_is_the_app(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(APP)
    (worker,) = sup.wait_serving(1)
    assert titled(sup.pid) == f"supervisor: master [{APP}]"
    assert titled(worker) == f"supervisor: worker 1 [{APP}]"
