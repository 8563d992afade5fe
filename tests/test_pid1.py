"""The supervisor as PID 1, the way a container runs it (no tini).

Each test starts ``unshare --pid --fork --mount-proc python -m supervisor ...``:
the supervisor is init of a fresh pid namespace, with the namespace's own
/proc. It must then do init's two jobs: reap every orphan the kernel hands it,
and act on the signals a container runtime sends from outside the namespace
(the kernel drops signals to init that have no handler, so a PID 1 without
its own SIGTERM handler just ignores ``docker stop``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_OK
from tests.supervisor_process import REPO, free_port, wait_for

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or shutil.which("unshare") is None,
        reason="needs Linux and util-linux unshare",
    ),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,
        reason="a new pid namespace needs root (CAP_SYS_ADMIN)",
    ),
    pytest.mark.timeout(60),
]


class NamespacedSupervisor:
    """``python -m supervisor`` as init of a new pid namespace."""

    def __init__(self, tmp_path: Path, app: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"pid1-{self.port}.log"
        self._log = self.log_path.open("wb")
        command = [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",  # if unshare dies, init (and so the namespace) dies too
            sys.executable,
            "-m",
            "supervisor",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--app-dir",
            str(REPO),
            "--timeout-graceful",
            "10",
            *args,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,
        )
        self._init_pid: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def init_pid(self) -> int:
        """The host pid of the namespace's PID 1: unshare's only child."""
        if self._init_pid is None:

            def child() -> int | None:
                if self.proc.poll() is not None:
                    raise AssertionError(f"unshare exited early:\n{self.log()}")
                with contextlib.suppress(psutil.NoSuchProcess):
                    children = psutil.Process(self.proc.pid).children()
                    if children:
                        return children[0].pid
                return None

            self._init_pid = wait_for(child, 10, message="unshare's child")
        return self._init_pid

    def namespace(self) -> str:
        return os.readlink(f"/proc/{self.init_pid}/ns/pid")

    def members(self) -> list[psutil.Process]:
        """Every process in the namespace, seen from the host."""
        ns = self.namespace()
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.readlink(f"/proc/{process.pid}/ns/pid") == ns:
                    found.append(process)
        return found

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def wait_serving(self, timeout: float = 20) -> None:
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited early:\n{self.log()}")
            try:
                return self.get("/", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(serving, timeout, interval=0.05, message=f"serving\n{self.log()}")

    def signal(self, sig: int) -> None:
        """From outside the namespace, the way a container runtime does it."""
        os.kill(self.init_pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"still running after {timeout}s:\n{self.log()}") from exc

    def stop(self) -> None:
        """Always called: TERM, wait, then KILL init, which kills the whole namespace."""
        if self.proc.poll() is None and self._init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        if self._init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_pid1(tmp_path: Path) -> Iterator[Callable[..., NamespacedSupervisor]]:
    started: list[NamespacedSupervisor] = []

    def start(app: str, *args: str) -> NamespacedSupervisor:
        process = NamespacedSupervisor(tmp_path, app, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def zombies(members: list[psutil.Process]) -> list[str]:
    found = []
    for process in members:
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} ({process.name()}, ppid {process.ppid()})")
    return found


def test_supervisor_is_pid1_of_the_namespace(start_pid1) -> None:
    supervisor = start_pid1("tests.apps.pid1:app", "--workers", "2")
    supervisor.wait_serving()
    answer = supervisor.get("/procs").json()
    assert answer["ppid"] == 1, "a worker's parent is the supervisor, PID 1 of the namespace"
    table = {row["pid"]: row for row in answer["procs"]}
    # PID 1 is the supervisor, titled for ps and top (setproctitle sets comm too).
    assert table[1]["comm"].startswith("supervisor")
    assert {row["pid"] for row in table.values() if row["ppid"] == 1} >= {answer["pid"]}


def test_reparented_orphans_are_reaped(start_pid1) -> None:
    supervisor = start_pid1("tests.apps.pid1:app", "--workers", "2")
    supervisor.wait_serving()
    orphans = []
    for _ in range(6):
        answer = supervisor.get("/orphan?s=0.3").json()
        orphans.append(answer["orphan"])
        stat = answer["stat"]
        assert stat is not None, "the orphan should still be sleeping"
        assert stat["ppid"] == 1, f"orphan {stat} was not re-parented to the supervisor"

    def settled() -> bool:
        # The orphans have exited; anything left of them is a zombie nobody reaped.
        table = supervisor.get("/procs").json()["procs"]
        left = [row for row in table if row["pid"] in orphans or row["state"] == "Z"]
        return not left and not zombies(supervisor.members())

    try:
        wait_for(settled, 10, interval=0.1, message="orphans reaped")
    except AssertionError:
        table = supervisor.get("/procs").json()["procs"]
        pytest.fail(
            "PID 1 left zombies: "
            + ", ".join(str(row) for row in table if row["state"] == "Z")
            + f"\n{supervisor.log()}"
        )

    # Reaping strangers must not disturb the workers' bookkeeping or the exit code.
    assert supervisor.get("/").status_code == 200
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(20) == EXIT_OK, supervisor.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_pid1_drains_and_exits_0(start_pid1, tmp_path: Path, sig: int) -> None:
    supervisor = start_pid1("tests.apps.pid1:app", "--workers", "2")
    supervisor.wait_serving()
    marker = tmp_path / "in-flight"
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            response = supervisor.get(f"/sleep?s=1.5&mark={marker}", timeout=15)
            result["status"] = response.status_code
        except httpx.HTTPError as exc:
            result["error"] = repr(exc)

    client = threading.Thread(target=slow_request)
    client.start()
    try:
        wait_for(marker.exists, 10, message="the slow request to be in flight")
        supervisor.signal(sig)
        code = supervisor.wait_exit(20)
    finally:
        client.join(20)
    assert result == {"status": 200}, f"{result}\n{supervisor.log()}"
    assert code == EXIT_OK, supervisor.log()
    assert signal.Signals(sig).name in supervisor.log()
    assert not psutil.pid_exists(supervisor.init_pid), "init is gone, and the namespace with it"


def test_bad_app_as_pid1_exits_4(start_pid1) -> None:
    supervisor = start_pid1("tests.apps.broken:app", "--workers", "2")
    assert supervisor.wait_exit(30) == EXIT_APP_LOAD_ERROR, supervisor.log()
    assert "boom at import" in supervisor.log()


def test_usr2_as_pid1_is_refused_in_one_line_and_serving_goes_on(start_pid1) -> None:
    supervisor = start_pid1("tests.apps.pid1:app", "--workers", "2")
    supervisor.wait_serving()
    supervisor.signal(signal.SIGUSR2)
    refused = "Received SIGUSR2: not upgrading: the supervisor is PID 1"
    wait_for(lambda: refused in supervisor.log(), 10, message=supervisor.log())
    time.sleep(0.5)
    assert supervisor.proc.poll() is None and supervisor.get("/").status_code == 200
    assert "Traceback" not in supervisor.log()
    assert [line for line in supervisor.log().splitlines() if "SIGUSR2" in line] == [
        line for line in supervisor.log().splitlines() if refused in line
    ]
