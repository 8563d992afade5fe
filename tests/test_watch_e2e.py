"""`python -m supervisor status --watch` against a real supervisor, not on a terminal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import StartSupervisor
from tests.load import KeepAliveLoad
from tests.supervisor_process import REPO


def client(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def test_watch_prints_plain_frames_with_rates_when_not_a_tty(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--pid", str(pid_file))
    workers = sup.wait_serving(2)
    with KeepAliveLoad(sup.url, connections=2, max_seconds=30) as load:
        load.wait_requests(50)
        result = client("status", "--pid", str(pid_file), "--watch", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout  # no terminal control codes in a pipe
    frames = result.stdout.strip().split("\n\n")
    assert len(frames) == 3, result.stdout
    for text in frames:
        lines = text.splitlines()
        assert lines[0].startswith(f"supervisor {sup.pid}  version ")
        assert lines[1].split()[:9] == [
            "PID", "GEN", "STATE", "AGE", "REQ/S", "IN-FL", "CONNS", "RSS", "CPU%"
        ]  # fmt: skip
        rows = {int(line.split()[0]): line.split() for line in lines[2:4]}
        assert set(rows) == workers
        assert lines[4].startswith("total: ") and "restarts: none" in lines[4]
    # The first frame has no rates yet; later ones do, and the load shows in them.
    assert all(row[4] == "-" for row in (line.split() for line in frames[0].splitlines()[2:4]))
    later = [line.split() for line in frames[2].splitlines()[2:4]]
    assert sum(float(row[4]) for row in later) > 0, frames[2]
    assert all(re.fullmatch(r"\d+\.\d", row[-1]) for row in later), frames[2]  # CPU%
    assert re.search(r"total: \d+\.\d req/s", frames[2])


def test_top_is_watch_and_no_supervisor_is_one_line(tmp_path: Path) -> None:
    for command in (["status", "--watch"], ["top"], ["status"]):
        result = client(*command, "--pid", str(tmp_path / "none.pid"), "-n", "1")
        if command == ["status"]:
            result = client("status", "--pid", str(tmp_path / "none.pid"))
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")
        assert "Traceback" not in result.stderr


def test_watch_follows_the_supervisor_across_an_upgrade(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "app.pid"
    sup = start_supervisor("tests.apps.hello:app", "-w", "1", "--pid", str(pid_file))
    sup.wait_serving(1)
    assert httpx.get(sup.url).status_code == 200
    watcher = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "top", "--pid", str(pid_file), "-n", "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        time.sleep(1.5)
        sup.signal(signal.SIGUSR2)
        out, err = watcher.communicate(timeout=40)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)
    assert watcher.returncode == 0, err
    pids = {int(m.group(1)) for m in re.finditer(r"^supervisor (\d+)  version", out, re.M)}
    assert sup.pid in pids and len(pids) == 2, out
