"""The foundation end to end: real supervisor processes, real sockets, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import REPO, free_port, run_cli, wait_for


def test_n_distinct_workers_answer(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "3")
    pids = sup.wait_serving(3)
    answered: set[int] = set()
    for _ in range(300):
        with httpx.Client() as client:  # a new connection each time spreads them out
            answered.add(int(client.get(sup.url + "/").text))
        if answered == pids:
            break
    assert answered == pids


def test_killed_worker_is_replaced_quickly(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "2")
    before = sup.wait_serving(2)
    victim = min(before)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        pids = sup.serving_pids()
        return pids if len(pids) == 2 and victim not in pids else None

    after = wait_for(
        replaced,
        timeout=5,
        interval=0.005,
        message="a replacement serving",
    )
    replaced_in = time.monotonic() - killed_at
    assert len(after - before) == 1
    assert replaced_in < 0.5, f"replacement took {replaced_in:.3f}s"
    assert f"Worker {victim} died: killed by SIGKILL" in sup.log()
    assert sup.get("/").status_code == 200


def _request_in_flight(url: str, results: list[httpx.Response | Exception]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(httpx.get(url, timeout=60))
        except Exception as exc:  # recorded for the assertion
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_lets_in_flight_request_finish(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "2")
    sup.wait_serving(2)
    mark = tmp_path / "in-flight"
    results: list[httpx.Response | Exception] = []
    thread = _request_in_flight(f"{sup.url}/sleep?s=3&mark={mark}", results)
    wait_for(mark.exists, 5, message="request in flight")
    sup.signal(signal.SIGTERM)
    workers = sup.children()
    assert sup.wait_exit(15) == 0
    thread.join(10)
    assert isinstance(results[0], httpx.Response), results
    assert results[0].status_code == 200
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers
    )


def test_sigterm_kills_hanging_request_after_graceful_timeout(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "1", "--timeout-graceful", "1")
    sup.wait_serving(1)
    mark = tmp_path / "in-flight"
    results: list[httpx.Response | Exception] = []
    thread = _request_in_flight(f"{sup.url}/sleep?s=60&mark={mark}", results)
    wait_for(mark.exists, 5, message="request in flight")
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(10)
    took = time.monotonic() - started
    thread.join(10)
    assert code == 1  # a request was cut: the drain was not clean
    assert 1.0 <= took < 4.0
    assert "graceful timeout (1.0s) exceeded; cancelling 1 request(s)" in sup.log()
    # The cut request is answered 500 when headers were not sent yet, else the
    # connection closes; either way it did not hang.
    result = results[0]
    assert isinstance(result, Exception) or result.status_code == 500


def test_sigquit_is_fast(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "2")
    sup.wait_serving(2)
    mark = tmp_path / "in-flight"
    results: list[httpx.Response | Exception] = []
    thread = _request_in_flight(f"{sup.url}/sleep?s=30&mark={mark}", results)
    wait_for(mark.exists, 5, message="request in flight")
    started = time.monotonic()
    sup.signal(signal.SIGQUIT)
    # Fast, and truthful: the request in flight was cut, so the exit code is 1 (issue 22 #7).
    assert sup.wait_exit(5) == 1
    assert time.monotonic() - started < 2
    thread.join(10)


def test_second_sigint_forces_exit(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "1")
    sup.wait_serving(1)
    mark = tmp_path / "in-flight"
    results: list[httpx.Response | Exception] = []
    thread = _request_in_flight(f"{sup.url}/sleep?s=30&mark={mark}", results)
    wait_for(mark.exists, 5, message="request in flight")
    sup.signal(signal.SIGINT)
    wait_for(lambda: "press Ctrl-C again" in sup.log(), 5, message="first SIGINT handled")
    sup.signal(signal.SIGINT)
    sup.wait_exit(5)
    assert "Received SIGINT again: forcing exit" in sup.log()
    thread.join(10)


def _run_cli(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("nope.missing:app", 'Could not import module "nope.missing"'),
        ("tests.apps.hello:nothing", 'Attribute "nothing" not found in module "tests.apps.hello"'),
    ],
)
def test_bad_app_path_is_one_line_and_exit_4(app: str, expected: str) -> None:
    started = time.monotonic()
    result = _run_cli(app, "--port", str(free_port()), "--workers", "3")
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 5
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert sum(expected in line for line in errors) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_import_error_in_app_shown_once_exit_4() -> None:
    result = _run_cli("tests.apps.broken:app", "--port", str(free_port()), "--workers", "4")
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("RuntimeError: boom at import (deliberate)") == 1, result.stderr
    assert "stopping instead of respawning" in result.stderr


def test_lifespan_startup_failure_exit_3() -> None:
    result = _run_cli(
        "tests.apps.hello:failing_lifespan", "--port", str(free_port()), "--workers", "3"
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("database is unreachable (deliberate startup failure)") == 1


def test_preload_import_error_fails_before_forking() -> None:
    result = _run_cli("tests.apps.broken:app", "--port", str(free_port()), "--preload")
    assert result.returncode == 4
    assert "Booting worker" not in result.stderr
    assert "boom at import (deliberate)" in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _run_cli("tests.apps.hello:app", "--port", str(port))
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--workers", "zero"], "--workers: expected int"),
        (["--workers", "0"], "--workers: expected int >= 1"),
        (["--max-memory", "lots"], '--max-memory: "lots" is not a size'),
        (["--log-level", "loud"], "invalid choice: 'loud'"),
        (["app"], 'APP must be "module:attribute"'),
        ([], "Give the app to run"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], expected: str) -> None:
    if args[:1] != ["app"] and args:
        args = ["tests.apps.hello:app", *args]
    result = _run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_env_file_and_env_vars(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=from-env-file\n")
    sup = start_supervisor(
        "tests.apps.hello:app", "--env-file", str(env_file), env={"SUPERVISOR_WORKERS": "2"}
    )
    sup.wait_serving(2)
    assert sup.get("/env?name=GREETING").text == "from-env-file"


def test_unix_socket_bind(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    sup = start_supervisor("tests.apps.hello:app", "--bind", f"unix:{path}", "--workers", "2")
    sup.wait_serving(2)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        assert client.get("http://app/").status_code == 200
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 0
    assert not path.exists()


def test_fd_bind_and_pid_file(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    pid_file = tmp_path / "supervisor.pid"
    log = (tmp_path / "fd.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supervisor",
            "tests.apps.hello:app",
            "--bind",
            f"fd://{listener.fileno()}",
            "--pid",
            str(pid_file),
            "--app-dir",
            str(REPO),
        ],
        pass_fds=[listener.fileno()],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    listener.close()
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/"), 10, message="serving on fd")
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not pid_file.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _fd_targets(pid: int) -> dict[str, set[int]]:
    targets: dict[str, set[int]] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        # epoll/eventfd instances are per process even when their names match
        if not target.startswith("anon_inode:"):
            targets.setdefault(target, set()).add(int(name))
    return targets


def test_worker_inherits_no_supervisor_fds_but_listeners(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "2")
    workers = sup.wait_serving(2)
    supervisor_fds = _fd_targets(sup.pid)
    listener_inodes = set()
    for conn in psutil.Process(sup.pid).net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN:
            listener_inodes.update(t for t, fds in supervisor_fds.items() if conn.fd in fds)
    assert listener_inodes
    # What stdout/stderr point at (the log), which workers write to as well.
    stdio = {t for t, fds in supervisor_fds.items() if min(fds) <= 2}
    pipes_by_worker = {}
    for pid in workers:
        shared = set(_fd_targets(pid)) & set(supervisor_fds)
        # A worker's own pipes (its stack-dump pipe; the supervisor holds the read end).
        own_pipes = {t for t in shared if t.startswith("pipe:")}
        pipes_by_worker[pid] = own_pipes
        assert shared - stdio - listener_inodes - own_pipes == set(), shared
    first, second = pipes_by_worker.values()
    assert not first & second, "a pipe shared by two workers is not a worker's own"


def test_workers_exit_when_supervisor_is_killed(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--workers", "2")
    workers = sup.wait_serving(2)
    sup.signal(signal.SIGKILL)
    sup.proc.wait(5)

    def all_gone() -> bool:
        return not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers
        )

    wait_for(all_gone, 2.5, message="orphaned workers exit")
    # The port is free again at once for a restarted supervisor.
    again = start_supervisor("tests.apps.hello:app", "--port", str(sup.port), "--host", "127.0.0.1")
    again.wait_serving(1)
