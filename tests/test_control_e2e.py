"""`python -m supervisor status` against a running supervisor, over its control socket."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import StartSupervisor
from tests.supervisor_process import REPO, wait_for


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "status", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )


def test_status_shows_the_worker_table(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--pid", str(pid_file))
    workers = sup.wait_serving(2)
    for _ in range(5):
        assert sup.get().status_code == 200
    socket_path = tmp_path / "app.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600

    def counted() -> dict[str, object] | None:
        result = status("--pid", str(pid_file), "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, object] = json.loads(result.stdout)
        totals = data["totals"]
        assert isinstance(totals, dict)
        measured = all(w["rss_bytes"] > 0 for w in data["workers"])  # type: ignore[attr-defined]
        return data if totals["requests"] == 5 and measured else None

    data = wait_for(counted, 5, interval=0.2, message="status counts the 5 requests")
    assert data["pid"] == sup.pid
    listed = data["workers"]
    assert isinstance(listed, list)
    assert {w["pid"] for w in listed} == workers
    assert all(w["state"] == "serving" and w["rss_bytes"] > 0 for w in listed)

    table = status("--control-socket", str(socket_path))
    assert table.returncode == 0, table.stderr
    assert "PID" in table.stdout and "serving" in table.stdout
    assert all(str(pid) in table.stdout for pid in workers)
    assert "total: 5 requests served" in table.stdout


def test_status_without_a_supervisor_is_one_clear_line(tmp_path: Path) -> None:
    result = status("--control-socket", str(tmp_path / "nothing.sock"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot query the supervisor at ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_control_socket_is_removed_on_exit(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    path = tmp_path / "ctl.sock"
    sup = start_supervisor("tests.apps.hello:app", "--control-socket", str(path))
    sup.wait_serving(1)
    assert path.exists()
    os.kill(sup.pid, 15)
    assert sup.wait_exit(15) == 0
    assert not path.exists()
