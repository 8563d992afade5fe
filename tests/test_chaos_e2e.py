"""Faults under load: killed workers, a killed supervisor, respawn leaks, signal storms."""

from __future__ import annotations

import os
import random
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

from supervisor.arbiter.policy import STABLE_AFTER
from tests.conftest import StartSupervisor
from tests.load import KeepAliveLoad
from tests.supervisor_process import REPO, SupervisorProcess, wait_for


def zombies_of(pid: int) -> list[int]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    zombies = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return zombies


@pytest.mark.slow
def test_twenty_worker_kills_under_load_fail_only_in_flight_requests(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "3")
    sup.wait_serving(3)
    rng = random.Random(7)
    kills = 0
    with KeepAliveLoad(sup.url + "/", connections=6) as load:
        load.wait_requests(100)
        for _ in range(20):
            sup.wait_serving(3, timeout=10)
            # Established workers: a worker killed young counts towards a crash loop
            # (tested in test_lifecycle_e2e), which would rightly slow its respawn.
            established = wait_for(lambda: _serving_for(sup, STABLE_AFTER), 10, message="aged")
            victim = rng.choice(sorted(established))
            os.kill(victim, signal.SIGKILL)
            kills += 1
            wait_for(lambda v=victim: v not in sup.serving_pids(), 5, message="kill seen")
        sup.wait_serving(3, timeout=10)
        load.wait_requests(load.result.ok + load.result.failed + 100)
    # Each kill can cut at most the requests in flight on that worker's connections.
    assert load.result.failed <= kills * 6, load.result.errors
    assert all("HTTP" not in error for error in load.result.errors), load.result.errors
    assert len(sup.serving_pids()) == 3
    wait_for(lambda: not zombies_of(sup.pid), 5, message="no zombies")
    assert sup.get("/").status_code == 200


def test_supervisor_sigkill_takes_workers_down_and_port_rebinds(tmp_path: Path) -> None:
    sup = SupervisorProcess(tmp_path, ["tests.apps.hello:app", "-w", "3"])
    try:
        workers = sup.wait_serving(3)
        os.kill(sup.pid, signal.SIGKILL)
        sup.proc.wait(5)
        started = time.monotonic()
        wait_for(
            lambda: not any(_alive(pid) for pid in workers),
            2,
            interval=0.01,
            message="workers exit with their supervisor",
        )
        assert time.monotonic() - started < 2
        again = SupervisorProcess(
            tmp_path, ["tests.apps.hello:app", "-w", "1", "--port", str(sup.port)]
        )
        try:
            again.url = sup.url
            again.wait_serving(1)
            assert again.get("/").status_code == 200
        finally:
            again.stop()
    finally:
        sup.stop()


def _serving_for(sup: SupervisorProcess, seconds: float) -> set[int]:
    now = time.time()
    aged = set()
    for pid in sup.serving_pids():
        try:
            if now - psutil.Process(pid).create_time() > seconds + 0.1:
                aged.add(pid)
        except psutil.NoSuchProcess:
            continue
    return aged


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_fds_and_rss_stay_flat_over_500_respawns(start_supervisor: StartSupervisor) -> None:
    # --max-requests 1: every request retires its worker, so N requests are N respawns
    # through the whole path (fork, channel, boot, drain, reap).
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--max-requests", "1")
    sup.wait_serving(2)
    process = psutil.Process(sup.pid)

    def respawn(count: int) -> None:
        target = sup.log().count("Booting worker") + count
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while sup.log().count("Booting worker") < target:
                assert client.get(sup.url + "/").status_code == 200

    respawn(50)  # warm up lazily allocated state before the baseline
    wait_for(lambda: len(sup.children()) == 2, 10, message="2 workers")
    fds_before, rss_before = _fd_count(sup.pid), process.memory_info().rss
    respawn(500)
    wait_for(lambda: len(sup.children()) == 2, 10, message="2 workers")
    fds_after, rss_after = _fd_count(sup.pid), process.memory_info().rss
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    assert rss_after - rss_before < 4 * 1024 * 1024, (rss_before, rss_after)
    assert not zombies_of(sup.pid)


@pytest.mark.slow
def test_signal_storm_ends_consistent_without_losing_requests(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2")
    sup.wait_serving(2)
    with KeepAliveLoad(sup.url + "/", connections=8) as load:
        load.wait_requests(100)
        deadline = time.monotonic() + 1.0
        for _ in range(50):  # 50 SIGHUPs within a second
            sup.signal(signal.SIGHUP)
            time.sleep(max(0.0, (deadline - time.monotonic()) / 50))
        for sig in [signal.SIGTTIN] * 5 + [signal.SIGTTOU] * 3:
            sup.signal(sig)
            time.sleep(0.01)

        # Identical pending signals may coalesce, so the target is what the
        # supervisor says it received; the last TTOU has been handled once the
        # pool matches it.
        def target() -> int:
            log = sup.log()
            return 2 + log.count("Received SIGTTIN") - log.count("Received SIGTTOU")

        wait_for(
            lambda: (
                "Received SIGTTOU" in sup.log()
                and len(sup.serving_pids()) == target()
                and sup.children() == sup.serving_pids()
            ),
            30,
            message=f"settled at {target()} workers\n{sup.log()[-3000:]}",
        )
        load.wait_requests(load.result.ok + load.result.failed + 200)
    assert load.result.failed == 0, load.result.errors
    assert sup.proc.poll() is None
    assert not zombies_of(sup.pid)


def test_sigterm_during_rolling_restart_drains_in_flight_request(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2")
    sup.wait_serving(2)
    mark = tmp_path / "in-flight"
    result: list[int] = []

    def slow_request() -> None:
        response = httpx.get(f"{sup.url}/sleep?s=1.5&mark={mark}", timeout=10)
        result.append(response.status_code)

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(mark.exists, 5, message="request in flight")
    sup.signal(signal.SIGHUP)
    time.sleep(0.05)
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0, sup.log()
    thread.join(10)
    assert result == [200]


def test_bad_app_on_sighup_keeps_old_workers_serving(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    module = tmp_path / "flaky.py"
    module.write_text("from tests.apps.hello import app\n")
    sup = start_supervisor(
        "flaky:app",
        "-w",
        "2",
        "--app-dir",
        str(tmp_path),
        env={"PYTHONPATH": str(REPO)},
    )
    old = sup.wait_serving(2)
    module.write_text("raise RuntimeError('deploy went wrong (deliberate)')\n")
    with KeepAliveLoad(sup.url + "/", connections=4) as load:
        load.wait_requests(50)
        sup.signal(signal.SIGHUP)
        wait_for(lambda: "Rolling restart aborted" in sup.log(), 10, message="abort logged")
        load.wait_requests(load.result.ok + load.result.failed + 100)
    assert load.result.failed == 0, load.result.errors
    assert sup.log().count("RuntimeError: deploy went wrong (deliberate)") == 1
    assert sup.serving_pids() >= old
    assert sup.proc.poll() is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--env-file", "/nonexistent/.env"], "--env-file /nonexistent/.env"),
        (["--env-file", "/tmp"], "--env-file /tmp"),  # exists but cannot be read as a file
        (["--config", "/nonexistent/conf.py"], "/nonexistent/conf.py"),
    ],
)
def test_config_faults_are_one_line(args: list[str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "tests.apps.hello:app", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_file_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = (\n")
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "tests.apps.hello:app", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert "gunicorn.conf.py" in result.stderr and "line 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def _raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


@pytest.mark.parametrize(
    "payload",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"\x00\xff\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20,
    ],
)
def test_malformed_http_never_crashes_a_worker(
    start_supervisor: StartSupervisor, payload: bytes
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "1")
    (pid,) = sup.wait_serving(1)
    reply = _raw_exchange(sup.port, payload)
    # httptools answers HTTP/0.9 as 1.0 and has no header-size limit (uvicorn's
    # choice); what matters here is a well-formed answer and a worker that lives.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 ")
    assert sup.serving_pids() == {pid}
    assert sup.get("/").status_code == 200


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_slowloris_does_not_starve_normal_clients(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--timeout-keep-alive", "2")
    sup.wait_serving(2)
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", sup.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
            slow.append(sock)
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            assert httpx.get(sup.url + "/", timeout=5).status_code == 200
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 0.5, latencies
        # Each one is closed once it has had --timeout-keep-alive to send its head.
        wait_for(lambda: all(_closed_by_peer(sock) for sock in slow), 6, message="slow closed")
    finally:
        for sock in slow:
            sock.close()
