"""Safe deploys, end to end: --ready-path gating and canary rolls judged on live traffic.

Each build of tests.apps.canary takes its behaviour from an --env-file that the
supervisor re-reads on SIGHUP; a DeployLoad client keeps keep-alive traffic
going through the roll and records which version answered what.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.app.cluster import backend
from tests.conftest import StartSupervisor
from tests.deploy_load import DeployLoad
from tests.notify_socket import NotifySocket
from tests.supervisor_process import REPO, SupervisorProcess, free_port, status_json, wait_for

APP = "tests.apps.canary:app"


def _build(env_file: Path, version: str, **settings: str) -> None:
    lines = [f"CANARY_VERSION={version}"]
    for key in ("fail_share", "crash_after", "ready", "delay", "ballast_mb"):
        lines.append(f"CANARY_{key.upper()}={settings.get(key, '')}")
    env_file.write_text("\n".join(lines) + "\n")


def _versions(sup: SupervisorProcess, tries: int = 40) -> set[str]:
    """What the pool answers now, over fresh connections (reaching every worker)."""
    return {sup.get("/").text for _ in range(tries)}


def _until(sup: SupervisorProcess, predicate: Callable[[], object], timeout: float) -> None:
    try:
        wait_for(predicate, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{sup.log()}") from None


def _status(env_file: Path) -> dict[str, object]:
    return status_json("--control-socket", str(env_file.with_suffix(".sock")))


def _failures(load: DeployLoad, since: float = 0.0) -> list[tuple[int, str]]:
    return [(a.status, a.body) for a in load.since(since) if a.status != 200]


def _ready_gated(
    start_supervisor: StartSupervisor, env_file: Path, timeout_boot: str
) -> SupervisorProcess:
    """Build v1 and serve it with 2 workers gated on GET /ready."""
    _build(env_file, "v1")
    return start_supervisor(
        APP, "-w", "2", "--no-access-log", "--env-file", str(env_file), "--ready-path", "/ready",
        "--timeout-boot", timeout_boot,
    )  # fmt: skip


def test_ready_path_gates_the_roll_and_a_never_ready_build_gets_no_traffic(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    sup = _ready_gated(start_supervisor, env_file, timeout_boot="3")
    old = sup.wait_serving(2)
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(50)
        _build(env_file, "never-ready", ready="never")
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Rolling restart aborted" in sup.log(), 15)
        time.sleep(0.5)
    log = sup.log()
    assert "not ready: GET /ready answered 503" in log
    assert "did not start serving within 3s (--timeout-boot)" in log
    assert load.tally() and all(key == (200, "v1") for key in load.tally()), load.tally()
    assert sup.serving_pids() == old
    assert _versions(sup) == {"v1"}


def test_ready_path_holds_a_worker_until_its_app_is_ready(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    sup = _ready_gated(start_supervisor, env_file, timeout_boot="10")
    old = sup.wait_serving(2)
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(50)
        _build(env_file, "v2", ready="1.5")  # /ready answers 503 for 1.5 s, then 200
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: not (sup.serving_pids() & old), 20)
        wait_for(lambda: sup.children() == sup.serving_pids(), 10, message="old ones gone")
    assert "not ready: GET /ready answered 503" in sup.log()
    assert _failures(load) == []
    assert _versions(sup) == {"v2"}
    # Without the flag the same build is serving at once: the gate is --ready-path's.
    new = start_supervisor(APP, "-w", "1", "--env-file", str(env_file))
    new.wait_serving(1, timeout=3)
    assert "not ready" not in new.log()


def _canary(
    start_supervisor: StartSupervisor,
    env_file: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> SupervisorProcess:
    _build(env_file, "v1")
    sup = start_supervisor(
        APP, "-w", "2", "--no-access-log", "--env-file", str(env_file),
        "--canary-seconds", "3", "--timeout-graceful", "5",
        "--control-socket", str(env_file.with_suffix(".sock")), *args, env=env,
    )  # fmt: skip
    sup.wait_serving(2)
    return sup


def test_a_build_answering_30_percent_500s_is_rolled_back_then_a_good_one_rolls(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    metrics_port = free_port()
    sup = _canary(start_supervisor, env_file, "--metrics-bind", f"127.0.0.1:{metrics_port}")
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(100)
        _build(env_file, "v2", fail_share="0.3")
        hup = time.monotonic()
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Canary aborted" in sup.log(), 20)
        aborted = time.monotonic()
        _until(sup, lambda: _versions(sup, 20) == {"v1"}, 10)
        shown = _status(env_file)
        assert shown["rollouts"] == {"aborted": 1}
        assert str(shown["rollout"]).startswith("Canary aborted after")
        time.sleep(1.0)
        v2 = [a for a in load.since(hup) if a.body == "v2"]
        # Only the canary answered v2, and only during its window (and its drain).
        assert v2, "the canary served no traffic"
        assert max(a.at for a in v2) < aborted + 1.0
        failures = _failures(load)
        assert failures and set(failures) == {(500, "v2")}, load.tally()
        share = len(failures) / len(v2)
        assert 0.2 < share < 0.4, share  # the canary's own 30%, none of the old generation's
        # The next SIGHUP tries again with what is on disk then: a healthy v3 rolls through.
        _build(env_file, "v3")
        again = time.monotonic()
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Rolling restart complete" in sup.log(), 30)
        _until(sup, lambda: sup.children() == sup.serving_pids(), 10)
        assert _failures(load, since=again) == []
    log = sup.log()
    line = next(x for x in log.splitlines() if "Canary aborted" in x)
    assert "5xx share up" in line and "requests judged; rolling back to generation 1" in line
    assert "Canary passed" in log
    assert _versions(sup) == {"v3"}
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert re.search(r'supervisor_rollouts_total\{.*result="aborted"\} 1\.0\n', metrics)
    assert re.search(r'supervisor_rollouts_total\{.*result="completed"\} 1\.0\n', metrics)
    assert re.search(r'supervisor_worker_restarts_total\{.*reason="rollback"\} 1\.0\n', metrics)
    print(f"\nverdict: {line}\ntime to abort: {aborted - hup:.1f}s; 500s: {len(failures)}")


def test_a_build_that_crashes_after_boot_is_rolled_back(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    with NotifySocket(tmp_path / "notify.sock") as systemd:
        sup = _canary(start_supervisor, env_file, env=systemd.env)
        _crash_rolled_back(sup, env_file)
        # The verdict is one STATUS= among the supervisor's periodic ones (issue 20).
        told = systemd.wait_for(
            lambda m: m.tags.get("STATUS", "").startswith("Canary aborted after"),
            5,
            "the verdict as STATUS",
        )
    assert told.pid == sup.pid


def _crash_rolled_back(sup: SupervisorProcess, env_file: Path) -> None:
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(100)
        _build(env_file, "v2", crash_after="1.5")
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Canary aborted" in sup.log(), 20)
        _until(sup, lambda: _versions(sup, 20) == {"v1"}, 10)
        settled = time.monotonic()
        time.sleep(1.0)
        assert _failures(load, since=settled) == []
    # At most the requests in flight on the canary when it died fail (one per connection).
    assert len(_failures(load)) <= load.connections, load.tally()
    assert "1 new worker(s) crashed" in sup.log()
    assert _versions(sup) == {"v1"}


def test_sigterm_during_a_canary_stops_cleanly(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    sup = _canary(start_supervisor, env_file)
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(50)
        _build(env_file, "v2", fail_share="0.3")
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: len(sup.serving_pids()) == 3, 10)  # the canary serves
        assert "rollouts: none yet; canary of generation 2" in subprocess.run(
            [sys.executable, "-m", "supervisor", "status", "--control-socket",
             str(env_file.with_suffix(".sock"))],
            capture_output=True, text=True, timeout=20, cwd=REPO,
        ).stdout  # fmt: skip
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit(15) == 0
    log = sup.log()
    assert "Canary aborted" not in log and "Canary passed" not in log
    assert not {a.status for a in load.answers} - {200, 500, 0}


def test_the_reference_apps_ready_holds_back_a_build_whose_backend_checks_fail(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "app.env"
    with backend() as slice_:
        env_file.write_text("".join(f"{k}={v}\n" for k, v in slice_.env.items()))
        sup = start_supervisor(
            "app.main:app", "-w", "2", "--no-access-log", "--env-file", str(env_file),
            "--ready-path", "/ready", "--timeout-boot", "4",
        )  # fmt: skip
        old = sup.wait_serving(2, timeout=30)
        with DeployLoad(sup.url + "/health") as load:
            load.wait_count(50)
            # It starts (its lifespan reaches Redis and Postgres), but its /ready pings
            # cannot answer in time: the build is held back by the app's own check.
            failing = {**slice_.env, "FASTAGENTIC_READY_TIMEOUT": "0.000001"}
            env_file.write_text("".join(f"{k}={v}\n" for k, v in failing.items()))
            sup.signal(signal.SIGHUP)
            _until(sup, lambda: "Rolling restart aborted" in sup.log(), 30)
        assert "not ready: GET /ready answered 503" in sup.log()
        assert _failures(load) == []
        assert sup.serving_pids() == old
        assert sup.get("/ready").status_code == 200


def test_a_slow_build_is_rolled_back_by_the_latency_guard(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    sup = _canary(start_supervisor, env_file, "--canary-max-p99-ratio", "3")
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(100)
        _build(env_file, "v2", delay="0.1")  # correct answers, 100 ms each
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Canary aborted" in sup.log(), 30)
        _until(sup, lambda: _versions(sup, 20) == {"v1"}, 10)
    line = next(x for x in sup.log().splitlines() if "Canary aborted" in x)
    assert "p99 above 3x the old generation's" in line, line
    assert _failures(load) == []


def test_a_build_recycled_for_memory_in_its_window_is_rolled_back(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    sup = _canary(start_supervisor, env_file, "--max-memory", "150MiB")
    with DeployLoad(sup.url + "/") as load:
        load.wait_count(100)
        _build(env_file, "v2", ballast_mb="200")
        sup.signal(signal.SIGHUP)
        _until(sup, lambda: "Canary aborted" in sup.log(), 20)
        _until(sup, lambda: _versions(sup, 20) == {"v1"}, 10)
    assert "1 new worker(s) recycled for memory" in sup.log()
    assert _failures(load) == []
