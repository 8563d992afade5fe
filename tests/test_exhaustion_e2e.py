"""Resource exhaustion: fork failures, EMFILE on accept, a full disk, hostile bytes."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, wait_for

PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


@contextlib.contextmanager
def pids_cgroup() -> Iterator[Path]:
    """A cgroup-v1 pids cgroup (root can't be held back by RLIMIT_NPROC; this can)."""
    path = PIDS_CGROUP / f"supervisor-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a pids cgroup here: {exc}")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                (PIDS_CGROUP / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            path.rmdir()


def test_fork_failure_is_logged_retried_and_survived(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2")
    workers = sup.wait_serving(2)
    with pids_cgroup() as cgroup:
        (cgroup / "pids.max").write_text("1")  # the supervisor alone: every fork gets EAGAIN
        (cgroup / "cgroup.procs").write_text(str(sup.pid))
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: sup.log().count("Cannot fork a worker") >= 2,
            10,
            message=f"fork failures logged and retried\n{sup.log()}",
        )
        assert "Resource temporarily unavailable" in sup.log()
        assert sup.proc.poll() is None
        assert sup.get("/").status_code == 200  # the surviving worker keeps serving
        (cgroup / "pids.max").write_text("max")
        wait_for(lambda: len(sup.serving_pids()) == 2, 15, message="capacity restored")
    assert victim not in sup.serving_pids()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0


def test_a_worker_near_its_fd_limit_stops_accepting_and_is_replaced(
    start_supervisor: StartSupervisor,
) -> None:
    """At RLIMIT_NOFILE the event loop would accept and drop connections (uvloop's EMFILE
    handling): near it the worker leaves the queue to a replacement instead (issue 22 #2)."""
    sup = start_supervisor(
        "tests.apps.hello:app", "-w", "1", rlimits={resource.RLIMIT_NOFILE: (48, 48)}
    )
    (worker,) = sup.wait_serving(1)
    clients: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(70):  # more than one worker has descriptors for
            client = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
            clients.append(client)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(client.recv(65536))  # held open afterwards, keep-alive
    finally:
        for client in clients:
            client.close()
    assert all(answer.startswith(b"HTTP/1.1 200 OK") for answer in answers), [
        answer[:40] for answer in answers if not answer.startswith(b"HTTP/1.1 200")
    ]
    log = sup.log()
    assert "is near its open-file limit" in log
    assert f"Recycling worker {worker} (fd-limit" in log
    wait_for(lambda: _ok(sup), 15, interval=0.2, message="served after the recycle")
    # The replacement may itself have reached the limit while it took the queue: each
    # retiring worker drains once its own replacement serves, one after the other.
    wait_for(lambda: worker not in sup.serving_pids(), 15, message="the first worker replaced")
    assert sup.proc.poll() is None


def _ok(sup: SupervisorProcess) -> bool:
    try:
        return sup.get("/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_full_disk_log_file_is_reported_once_and_survived(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--log-file", "/dev/full")
    wait_for(lambda: _ok(sup), 10, interval=0.1, message="serving with a full disk")
    for _ in range(20):
        assert sup.get("/").status_code == 200
    sup.signal(signal.SIGHUP)  # a rolling restart while nothing can be logged
    wait_for(lambda: len(sup.children()) == 2 and _ok(sup), 10, message="rolled")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0
    stderr = sup.log()
    assert "Cannot write to log file /dev/full (No space left on device)" in stderr
    assert "Traceback" not in stderr
    # Once per process (supervisor + each worker), not once per line.
    assert stderr.count("Cannot write to log file") <= 6, stderr


@pytest.fixture(scope="module")
def shared_supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    sup = SupervisorProcess(
        tmp_path_factory.mktemp("fuzz"), ["tests.apps.hello:app", "-w", "1", "--no-access-log"]
    )
    try:
        sup.wait_serving(1)
        yield sup
    finally:
        sup.stop()


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


request_like = st.builds(
    lambda method, target, version, headers, body: (
        method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n" + body
    ),
    st.sampled_from([b"GET", b"POST", b"BREW", b"", b"G\x00T"]),
    st.binary(max_size=40),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1\x00", b""]),
    st.binary(max_size=300),
    st.binary(max_size=200),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=st.one_of(st.binary(min_size=1, max_size=2000), request_like))
def test_random_bytes_never_crash_a_worker(
    shared_supervisor: SupervisorProcess, payload: bytes
) -> None:
    before = shared_supervisor.serving_pids()
    reply = _exchange(shared_supervisor.port, payload)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 "), reply[:80]
    assert shared_supervisor.serving_pids() == before
    assert shared_supervisor.children() == before
