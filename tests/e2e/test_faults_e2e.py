"""Issue 22's faults that live in the arbiter and the worker, each reproduced end to end.

(The local-attacker faults, endpoints, early signals and exact scaling are in
test_hostile_e2e.py; the fd limit in test_exhaustion_e2e.py.)
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, free_port, wait_for
from tests.test_upgrade_e2e import serving_children, successors

FAULTY = "tests.apps.faulty:app"


def get(sup: SupervisorProcess, path: str, timeout: float = 10) -> httpx.Response:
    return httpx.get(sup.url + path, timeout=timeout, headers={"Connection": "close"})


def in_background(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url, timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and wanted in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in the metrics")


# 1: a stalled supervisor kills nobody ----------------------------------------------------


def test_a_paused_supervisor_kills_no_healthy_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(FAULTY, "-w", "2", "--timeout-worker", "2")
    before = sup.wait_serving(2)
    sup.signal(signal.SIGSTOP)
    try:
        time.sleep(5)  # longer than --timeout-worker
        # The workers serve on their own meanwhile: the supervisor is not on the path.
        assert get(sup, "/").status_code == 200
    finally:
        sup.signal(signal.SIGCONT)
    wait_for(lambda: "was paused for" in sup.log(), 5, message="the stall is noticed")
    time.sleep(1.5)  # a few ticks after the stall
    assert get(sup, "/").status_code == 200
    assert "is hung" not in sup.log()
    assert sup.serving_pids() == before and sup.children() == before


# 4: nothing a worker started keeps the port -------------------------------------------------


def test_an_apps_children_do_not_keep_the_port(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(FAULTY, "-w", "1")
    sup.wait_serving(1)
    grandchild = int(get(sup, "/fork").text)
    assert psutil.pid_exists(grandchild)
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0
    try:
        assert psutil.pid_exists(grandchild), (
            "the grandchild outlives the worker, as the app wanted"
        )
        for proc in [psutil.Process(grandchild), *psutil.Process(grandchild).children()]:
            with contextlib.suppress(psutil.Error):
                assert not [c for c in proc.net_connections() if c.status == psutil.CONN_LISTEN]
        with socket.socket() as probe:  # SO_REUSEADDR (TIME_WAIT), no SO_REUSEPORT
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", sup.port))  # fails if anything still listens there
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", sup.port)) == errno.ECONNREFUSED
    finally:
        with contextlib.suppress(psutil.Error):
            psutil.Process(grandchild).kill()


# 5: a worker sent SIGTERM directly is replaced at once and finishes its drain -----------


def test_a_worker_sigtermed_directly_is_replaced_and_finishes(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(FAULTY, "-w", "1", "--timeout-worker", "2")
    (worker,) = sup.wait_serving(1)
    results: list[int] = []
    slow = in_background(lambda: results.append(get(sup, "/sleep?s=4").status_code))
    time.sleep(0.5)
    psutil.Process(worker).send_signal(signal.SIGTERM)  # an operator, an OOM script
    started = time.monotonic()
    assert get(sup, "/").status_code == 200  # a replacement serves meanwhile
    assert time.monotonic() - started < 3
    slow.join(10)
    assert results == [200], "the in-flight request finished on the draining worker"
    wait_for(lambda: f"Worker {worker} stopped (left" in sup.log(), 10, message=sup.log())
    log = sup.log()
    assert f"Worker {worker} is draining on its own" in log and "is hung" not in log


# 6: hung detection applies while a roll waits ----------------------------------------------


def test_a_hung_worker_is_killed_on_time_during_a_rolling_restart(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(FAULTY, "-w", "1", "--timeout-worker", "2")
    (worker,) = sup.wait_serving(1)
    in_background(_swallow, sup, "/block?s=30")
    time.sleep(0.3)
    sup.signal(signal.SIGHUP)
    started = time.monotonic()
    wait_for(
        lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie",
        10,
        message="the hung worker killed",
    )
    assert time.monotonic() - started < 5, "at --timeout-worker, not at the drain deadline"
    wait_for(lambda: "stack dump" in sup.log(), 5, message="its stack dumped")
    assert f"Worker {worker} is hung" in sup.log()
    assert len(sup.wait_serving(1)) == 1


def _swallow(sup: SupervisorProcess, path: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        get(sup, path, timeout=40)


# 7: a fast stop that cut a request says so ----------------------------------------------


def test_a_second_sigint_that_cuts_a_request_exits_1(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(FAULTY, "-w", "1")
    sup.wait_serving(1)
    in_background(_swallow, sup, "/sleep?s=30")
    time.sleep(0.5)
    sup.signal(signal.SIGINT)
    wait_for(lambda: "press Ctrl-C again" in sup.log(), 5)
    sup.signal(signal.SIGINT)
    assert sup.wait_exit(10) == 1


# 11: clean exits while serving count as failures -------------------------------------------


def test_workers_that_exit_0_while_serving_back_off_and_are_counted(
    start_supervisor: StartSupervisor,
) -> None:
    port = free_port()
    sup = start_supervisor(FAULTY, "-w", "1", "--metrics-bind", f"127.0.0.1:{port}")
    sup.wait_serving(1)
    for _ in range(6):
        _swallow(sup, "/exit0")
        wait_for(lambda: len(sup.serving_pids()) == 1, 15, interval=0.05)
    url = f"http://127.0.0.1:{port}/metrics"
    assert metric(url, "supervisor_worker_restarts_total", reason="exited") == 6
    assert "exited on its own (exited with code 0) while serving" in sup.log()
    assert "Crash loop:" in sup.log()


# 13: SIGTERM right after SIGHUP loses no accepted connection --------------------------------


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk for a high connection rate")
def test_sigterm_during_a_roll_serves_what_the_kernel_accepted(
    start_supervisor: StartSupervisor,
) -> None:
    """Connections the kernel accepted into the listen queue are served, never reset: the
    last workers take the queue before they close the listeners."""
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--no-access-log")
    sup.wait_serving(2)
    load = subprocess.Popen(
        ["wrk", "-t2", "-c64", "-d4s", "-H", "Connection: close", sup.url + "/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        sup.signal(signal.SIGHUP)
        time.sleep(0.15)
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit(20) == 0
        out, _ = load.communicate(timeout=20)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
    served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    read_errors = int(errors.group(2)) if errors else 0  # accepted, then reset or closed
    timeouts = int(errors.group(4)) if errors else 0
    assert served > 1000 and "Non-2xx" not in out, out
    assert (read_errors, timeouts) == (0, 0), out


# 14: --max-memory-hard stops a runaway allocation in the worker ---------------------------


def test_max_memory_hard_stops_a_runaway_allocation(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(FAULTY, "-w", "1", "--max-memory-hard", "400MiB")
    (worker,) = sup.wait_serving(1)
    peak = [0]

    def watch() -> None:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(worker)
            while process.is_running():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.01)

    watcher = in_background(watch)
    assert get(sup, "/alloc?mb=2000").status_code == 500
    wait_for(lambda: f"Recycling worker {worker} (memory-hard" in sup.log(), 10, message=sup.log())
    wait_for(lambda: worker not in sup.serving_pids() and len(sup.serving_pids()) == 1, 15)
    watcher.join(5)
    assert peak[0] < 450 * 1024 * 1024, f"RSS reached {peak[0] >> 20} MiB"
    assert get(sup, "/").status_code == 200


# 15: the worker's logs never go to a client --------------------------------------------------


def test_closing_fd_2_sends_no_log_line_to_a_client(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(FAULTY, "-w", "1")
    sup.wait_serving(1)
    assert get(sup, "/closefd2").status_code == 200
    held = []
    try:
        for _ in range(5):  # the lowest free fd, 2, goes to the next accepted socket
            sock = socket.create_connection(("127.0.0.1", sup.port), timeout=5)
            held.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:120]
            assert b"[INFO]" not in answer
        time.sleep(0.3)
        for sock in held:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                assert b"[INFO]" not in sock.recv(65536)
    finally:
        for sock in held:
            sock.close()
    assert re.search(r'"GET / HTTP/1\.1" 200', sup.log()), "the access lines still reach the log"


# 17: a transient boot failure after serving is retried, not a stopped service ---------------


def test_boot_failures_after_serving_are_retried_with_backoff(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "backend-down"
    port = free_port()
    sup = start_supervisor(
        FAULTY, "-w", "2", "--metrics-bind", f"127.0.0.1:{port}", env={"FAIL_BOOT": str(marker)}
    )
    workers = sup.wait_serving(2)
    marker.touch()  # the backend goes down; every worker is lost
    for pid in workers:
        psutil.Process(pid).kill()
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: metric(url, "supervisor_boot_failing") == 1, 15, interval=0.2)
    time.sleep(2)
    assert sup.proc.poll() is None, "a transient outage does not stop the service"
    assert "No worker is serving: new workers fail to boot; retrying with backoff" in sup.log()
    marker.unlink()  # the backend is back
    wait_for(lambda: len(sup.serving_pids()) == 2, 30, interval=0.2, message=sup.log())
    assert get(sup, "/").status_code == 200
    wait_for(lambda: metric(url, "supervisor_boot_failing") == 0, 5)


# Signals meant for the supervisor, sent to the whole group, stop no worker at once -----


@pytest.mark.parametrize(
    ("sig", "serving"),
    [
        (signal.SIGTTIN, 3),
        (signal.SIGTTOU, 1),
        (signal.SIGUSR2, 2),
    ],
)
def test_supervisor_signals_sent_to_the_group_leave_workers_serving(
    start_supervisor: StartSupervisor, sig: signal.Signals, serving: int
) -> None:
    # `pkill -TTIN -f supervisor`, `kill -TTOU -- -$PGID`, a terminal's job control: by
    # default these kill (USR2) or stop (TTIN, TTOU) every worker in the group at once.
    sup = start_supervisor(FAULTY, "-w", "2")
    before = sup.wait_serving(2)
    os_killpg(sup, sig)
    time.sleep(1.0)
    for pid in before:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() != psutil.STATUS_STOPPED, sig.name
    if sig == signal.SIGUSR2:  # an upgrade: a new supervisor serves, the old one drains
        new = wait_for(lambda: successors(sup), 30, message=sup.log())[0]
        workers = wait_for(lambda: serving_children(new), 10, message=sup.log())
        assert len(workers) == serving and not workers & before
    else:
        assert len(sup.wait_serving(serving)) == serving  # the supervisor did what it means
    assert get(sup, "/").status_code == 200


def test_sighup_to_the_group_is_a_rolling_restart_not_an_outage(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(FAULTY, "-w", "2")
    before = sup.wait_serving(2)
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    client.get(sup.url + "/")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    thread = in_background(load)
    time.sleep(0.3)
    os_killpg(sup, signal.SIGHUP)  # the terminal closed: supervisor and workers get it
    wait_for(lambda: not (sup.serving_pids() & before), 15, message=sup.log())
    stop.set()
    thread.join(10)
    assert failures == []
    assert len(sup.wait_serving(2)) == 2


def os_killpg(sup: SupervisorProcess, sig: int) -> None:
    import os

    os.killpg(os.getpgid(sup.pid), sig)
