"""Safe deploys, end to end: --ready-path gating and canary rolls judged on live traffic.

Each build of tests.apps.canary takes its behaviour from an --env-file that the
supervisor re-reads on SIGHUP; a DeployLoad client keeps keep-alive traffic
going through the roll and records which version answered what.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import StartSupervisor
from tests.deploy_load import DeployLoad
from tests.supervisor_process import SupervisorProcess, wait_for

APP = "tests.apps.canary:app"


def _build(env_file: Path, version: str, **settings: str) -> None:
    lines = [f"CANARY_VERSION={version}"]
    for key in ("fail_share", "crash_after", "ready"):
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


def _failures(load: DeployLoad, since: float = 0.0) -> list[tuple[int, str]]:
    return [(a.status, a.body) for a in load.since(since) if a.status != 200]


def test_ready_path_gates_the_roll_and_a_never_ready_build_gets_no_traffic(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    env_file = tmp_path / "build.env"
    _build(env_file, "v1")
    sup = start_supervisor(
        APP, "-w", "2", "--no-access-log", "--env-file", str(env_file), "--ready-path", "/ready",
        "--timeout-boot", "3",
    )  # fmt: skip
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
    _build(env_file, "v1")
    sup = start_supervisor(
        APP, "-w", "2", "--no-access-log", "--env-file", str(env_file), "--ready-path", "/ready",
        "--timeout-boot", "10",
    )  # fmt: skip
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
