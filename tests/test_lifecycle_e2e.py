"""Worker lifecycle end to end: recycling, hung workers, rolling restarts, scaling, preload."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import StartSupervisor
from tests.load import KeepAliveLoad
from tests.supervisor_process import SupervisorProcess, wait_for

_EVENT = re.compile(r"Worker (\d+) serving|Draining worker (\d+)|Worker (\d+) (?:stopped|died)")


def min_capacity(log: str, target: int) -> int:
    """The fewest workers serving (and not draining) at any moment after the pool first
    reached ``target``, replayed from the supervisor's log."""
    serving: set[int] = set()
    reached = False
    lowest = target
    for line in log.splitlines():
        match = _EVENT.search(line)
        if match is None:
            continue
        if match.group(1):
            serving.add(int(match.group(1)))
        else:
            serving.discard(int(match.group(2) or match.group(3)))
        reached = reached or len(serving) >= target
        if reached:
            lowest = min(lowest, len(serving))
    return lowest


def recycled(sup: SupervisorProcess, reason: str) -> list[int]:
    pattern = re.compile(rf"Recycling worker (\d+) \({re.escape(reason)}: ")
    return [int(m.group(1)) for m in pattern.finditer(sup.log())]


def test_max_requests_with_jitter_recycles_without_losing_a_request(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        "tests.apps.hello:app", "-w", "2", "--max-requests", "100", "--max-requests-jitter", "50"
    )
    sup.wait_serving(2)
    with KeepAliveLoad(sup.url + "/", connections=8) as load:
        wait_for(lambda: len(recycled(sup, "max-requests")) >= 4, 30, message="4 recycles")
    assert load.result.failed == 0, load.result.errors
    limits = [int(n) for n in re.findall(r"\(max-requests: \d+ requests, limit (\d+)\)", sup.log())]
    assert all(100 <= limit <= 150 for limit in limits), limits
    assert len(set(limits)) > 1, f"jitter gave every worker the same limit: {limits}"
    assert min_capacity(sup.log(), 2) >= 2
    sup.wait_serving(2)


def test_rss_ceiling_recycles_the_leaking_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--max-memory", "120MiB")
    before = sup.wait_serving(2)
    with httpx.Client() as client:
        for _ in range(5):  # 5 x 20 MiB held by the worker
            client.get(sup.url + "/leak", params={"bytes": str(20 * 1024 * 1024)})
    # The next leak lands on whichever worker; keep going until one crosses the line.
    wait_for(
        lambda: recycled(sup, "memory") or _leak_more(sup), 20, interval=0.2, message="recycle"
    )
    victim = recycled(sup, "memory")[0]
    assert victim in before
    line = next(line for line in sup.log().splitlines() if f"Recycling worker {victim}" in line)
    assert re.search(r"RSS \d+(\.\d+)? MiB, limit 120(\.0)? MiB", line), line
    wait_for(lambda: victim not in sup.children(), 10, message="leaking worker gone")
    sup.wait_serving(2)
    assert min_capacity(sup.log(), 2) >= 2


def _leak_more(sup: SupervisorProcess) -> bool:
    with httpx.Client() as client:
        client.get(sup.url + "/leak", params={"bytes": str(20 * 1024 * 1024)})
    return False


def test_max_lifetime_recycles_by_age(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(
        "tests.apps.hello:app", "-w", "2", "--max-lifetime", "1", "--max-lifetime-jitter", "0.5"
    )
    first = sup.wait_serving(2)
    wait_for(lambda: set(recycled(sup, "lifetime")) >= first, 10, message="both recycled by age")
    wait_for(lambda: not (sup.children() & first), 10, message="old workers gone")
    assert min_capacity(sup.log(), 2) >= 2


def test_blocked_event_loop_is_detected_dumped_and_replaced(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--timeout-worker", "1")
    before = sup.wait_serving(2)
    mark = tmp_path / "blocked"
    blocker = threading.Thread(
        target=_swallow, args=(f"{sup.url}/block?s=60&mark={mark}",), daemon=True
    )
    blocker.start()
    wait_for(mark.exists, 5, message="blocking request started")
    blocked_pid = int(mark.read_text())
    started = time.monotonic()
    # The sibling keeps serving while the blocked one is detected.
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(sup.url + "/", headers={"connection": "close"}).status_code == 200
    wait_for(
        lambda: (
            not psutil.pid_exists(blocked_pid)
            or psutil.Process(blocked_pid).status() == psutil.STATUS_ZOMBIE
        ),
        5,
        interval=0.05,
        message="hung worker killed",
    )
    detected_in = time.monotonic() - started
    assert detected_in < 1 + 1.5, f"took {detected_in:.2f}s"
    # The stack is logged when the supervisor has reaped the worker, just after.
    log = wait_for(lambda: "stack dump" in sup.log() and sup.log(), 5, message="stack logged")
    assert f"Worker {blocked_pid} is hung" in log
    assert "in app" in log and "hello.py" in log  # faulthandler's stack dump names the frame
    after = sup.wait_serving(2)
    assert blocked_pid not in after and len(after & before) == 1


def _swallow(url: str) -> None:
    # The hung worker is killed; its request is the one that fails.
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=70)


@pytest.mark.slow
def test_sighup_replaces_every_worker_without_losing_a_request(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "3")
    first = sup.wait_serving(3)
    with KeepAliveLoad(sup.url + "/", connections=16) as load:
        load.wait_requests(200)
        for round_ in (1, 2):
            sup.signal(signal.SIGHUP)
            first = wait_for(
                _restarted(sup, round_, first), 20, message=f"rolling restart {round_} done"
            )
        seen = load.result.ok
        load.wait_requests(seen + 200)
    assert load.result.failed == 0, load.result.errors
    assert min_capacity(sup.log(), 3) >= 3
    assert len(load.result.pids) >= 6  # old and new workers both answered


def _restarted(sup: SupervisorProcess, hups: int, old: set[int]) -> Callable[[], set[int] | None]:
    def done() -> set[int] | None:
        pids = sup.serving_pids()
        finished = (
            sup.log().count("Received SIGHUP") == hups
            and len(pids) == len(old)
            and not (pids & old)
            and sup.children() == pids
        )
        return pids if finished else None

    return done


def test_sighup_batch_and_env_file_reload(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GREETING=one\n")
    sup = start_supervisor(
        "tests.apps.hello:app", "-w", "2", "--restart-batch", "2", "--env-file", str(env_file)
    )
    first = sup.wait_serving(2)
    assert sup.get("/env", params={"name": "GREETING"}).text == "one"
    env_file.write_text("GREETING=two\n")
    sup.signal(signal.SIGHUP)
    wait_for(
        lambda: len(sup.serving_pids()) == 2 and not (sup.serving_pids() & first),
        15,
        message="replaced",
    )
    wait_for(lambda: sup.children() == sup.serving_pids(), 10, message="old workers gone")
    assert "2 at a time" in sup.log()
    assert sup.get("/env", params={"name": "GREETING"}).text == "two"


def test_ttin_and_ttou_scale_by_one_never_below_one(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2")
    sup.wait_serving(2)
    sup.signal(signal.SIGTTIN)
    sup.wait_serving(3)
    for _ in range(4):
        sup.signal(signal.SIGTTOU)
        time.sleep(0.05)  # separate signals: the kernel merges identical pending ones
    sup.wait_serving(1)
    assert "Received SIGTTOU: scaling to 1 workers" in sup.log()
    assert "scaling to 0" not in sup.log()
    assert sup.get("/").status_code == 200


def test_crash_loop_backs_off(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "1")
    sup.wait_serving(1)
    spawn_times: list[float] = []
    for _ in range(5):
        pids = sup.wait_serving(1, timeout=15)
        spawn_times.append(time.monotonic())
        with pytest.raises(httpx.HTTPError):
            httpx.get(sup.url + "/crash", timeout=5)
        (pid,) = pids
        wait_for(lambda pid=pid: pid not in sup.serving_pids(), 5, message="crashed")
    log = sup.log()
    assert "Crash loop: 3 failures in a row; next spawn in 0.2s" in log, log
    assert "Crash loop: 4 failures in a row; next spawn in 0.4s" in log, log
    assert sup.proc.poll() is None  # it backs off; it does not give up on an app that served
    gaps = [b - a for a, b in itertools.pairwise(spawn_times)]
    assert gaps[-1] >= 0.2


def test_preload_imports_once_before_forking(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "imports"
    app_dir = tmp_path / "preapp"
    app_dir.mkdir()
    (app_dir / "counted.py").write_text(
        "import os\n"
        f"with open({str(marker)!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "from tests.apps.hello import app\n"
    )
    sup = start_supervisor(
        "counted:app",
        "-w",
        "3",
        "--preload",
        "--app-dir",
        str(app_dir),
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    sup.wait_serving(3)
    assert marker.read_text().split() == [str(sup.pid)]
    assert sup.get("/").status_code == 200


def test_worker_that_exits_cleanly_is_replaced(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2")
    before = sup.wait_serving(2)
    victim = min(before)
    os.kill(victim, signal.SIGTERM)  # drains and exits 0 on its own
    wait_for(
        lambda: len(sup.serving_pids()) == 2 and victim not in sup.serving_pids(),
        5,
        message="replaced",
    )


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def test_reuse_port_gives_each_worker_its_own_listener_and_loses_nothing_on_hup(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--reuse-port")
    pids = sup.wait_serving(2)
    a, b = (_socket_inodes(pid) for pid in pids)
    # Each worker's listener is its own; only the supervisor's bound-only socket is not shared.
    assert a != b
    log = sup.log()
    migrate = "tcp_migrate_req=1" in log
    assert migrate or "tcp_migrate_req is off" in log
    with KeepAliveLoad(sup.url + "/", connections=8) as load:
        load.wait_requests(200)
        sup.signal(signal.SIGHUP)
        wait_for(
            lambda: (
                len(sup.serving_pids()) == 2
                and not (sup.serving_pids() & pids)
                and sup.children() == sup.serving_pids()
            ),
            20,
            message="rolling restart done",
        )
        load.wait_requests(load.result.ok + load.result.failed + 200)
    if migrate:
        assert load.result.failed == 0, load.result.errors
    assert len(load.result.pids) == 4
