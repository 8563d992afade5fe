"""SIGHUP re-reads the --config file: what can apply does in the roll, the rest is named."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import StartSupervisor
from tests.supervisor_process import REPO, wait_for

HELLO = "tests.apps.hello:app"


def lines_with(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def test_hup_applies_the_new_config_and_names_what_needs_a_restart(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\n")
    sup = start_supervisor(HELLO, "--config", str(config))
    first = sup.wait_serving(2)
    # --bind here would lose to the test's --host/--port; backlog is set up at start too.
    config.write_text("workers = 3\nmax_requests = 5\nbacklog = 64\npreload_app = True\n")
    sup.signal(signal.SIGHUP)

    def rolled() -> set[int] | None:
        pids = sup.serving_pids()
        return pids if len(pids) == 3 and not pids & first else None

    now = wait_for(rolled, 20, message=sup.log())
    assert sup.children() == now
    log = sup.log()
    warned = lines_with(log, "only apply at a restart")
    assert len(warned) == 1 and "WARNING" in warned[0], warned
    assert "--backlog, --preload changed" in warned[0], warned
    applied = lines_with(log, "Reload: applying")
    assert applied and "--workers 2 -> 3" in applied[0] and "--max-requests 0 -> 5" in applied[0]
    # The new max_requests is live in the new workers: they recycle after ~5 requests.
    for _ in range(40):
        assert sup.get().status_code == 200
    wait_for(lambda: "Recycling worker" in sup.log(), 10, message=sup.log())
    assert "Listening at" not in log.split("Received SIGHUP", 1)[1]  # the same sockets


def test_a_config_that_no_longer_loads_aborts_the_reload(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\n")
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor(HELLO, "--config", str(config), "--pid", str(pid_file))
    workers = sup.wait_serving(2)
    config.write_text("workers = (\n")
    sup.signal(signal.SIGHUP)
    wait_for(lambda: "Reload aborted" in sup.log(), 10, message=sup.log())
    time.sleep(1.5)
    log = sup.log()
    errors = lines_with(log, "Reload aborted, nothing changed:")
    assert len(errors) == 1 and "ERROR" in errors[0] and str(config) in errors[0], errors
    assert "rolling restart" not in log and "Traceback" not in log
    assert sup.serving_pids() == workers == sup.children()
    assert sup.get().status_code == 200
    reload = subprocess.run(
        [sys.executable, "-m", "supervisor", "reload", "--pid", str(pid_file)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert reload.returncode != 0 and "reload aborted" in reload.stderr, reload
    assert len(reload.stderr.strip().splitlines()) == 1
    config.write_text("workers = 2\n")  # fixed: the next HUP rolls
    sup.signal(signal.SIGHUP)
    wait_for(lambda: not (sup.serving_pids() & workers), 20, message=sup.log())
