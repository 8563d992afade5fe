"""sd_notify end to end: what a Type=notify unit's systemd hears, and from which pid."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import StartSupervisor
from tests.notify_socket import Message, NotifySocket
from tests.supervisor_process import wait_for
from tests.test_upgrade_e2e import gone, successors

HELLO = "tests.apps.hello:app"


def states(messages: list[Message], pid: int | None = None) -> list[str]:
    """The state tags in order (READY, RELOADING, STOPPING, MAINPID=...)."""
    tags = []
    for message in messages:
        if pid is not None and message.pid != pid:
            continue
        for field in message.fields:
            if field in ("READY=1", "RELOADING=1", "STOPPING=1") or field.startswith("MAINPID="):
                tags.append(field)
    return tags


def test_start_roll_upgrade_and_stop_tell_systemd_in_order(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    with NotifySocket(tmp_path / "notify") as notify:
        sup = start_supervisor(HELLO, "-w", "2", env={**notify.env, "WATCHDOG_USEC": "1000000"})
        ready = notify.wait_for(lambda m: "READY=1" in m, 20, "READY=1")
        # READY only once the first workers serve, and from the supervisor itself.
        assert ready.pid == sup.pid
        assert len(sup.serving_pids()) == 2, sup.log()
        assert ready.tags["STATUS"].startswith("2/2 workers serving, generation 1")
        notify.wait_for(lambda m: "WATCHDOG=1" in m and m.pid == sup.pid, 5, "WATCHDOG=1")

        sup.signal(signal.SIGHUP)
        reloading = notify.wait_for(lambda m: "RELOADING=1" in m, 10, "RELOADING=1")
        assert "MONOTONIC_USEC" in reloading.tags
        done = notify.wait_for(lambda m: "READY=1" in m, 30, "READY=1 after the roll")
        assert "generation 2" in done.tags["STATUS"], done

        sup.signal(signal.SIGUSR2)
        handed = notify.wait_for(lambda m: any(f.startswith("MAINPID=") for f in m.fields), 30)
        new = successors(sup)[0]
        # The old supervisor, still the main pid, names the new one and says READY for it.
        assert handed.pid == sup.pid and handed.tags["MAINPID"] == str(new)
        assert "READY=1" in handed
        # From then on only the new one speaks (the watchdog followed it).
        notify.wait_for(lambda m: "WATCHDOG=1" in m and m.pid == new, 5, "the new one pings")
        wait_for(lambda: gone(sup.pid), 40, message=sup.log())
        os.kill(new, signal.SIGTERM)
        notify.wait_for(lambda m: "STOPPING=1" in m and m.pid == new, 10, "STOPPING=1")
        wait_for(lambda: gone(new), 40, message=sup.log())

    received = notify.received
    assert all(m.pid in (sup.pid, new) for m in received)  # never a worker
    old_said = states(received, sup.pid)
    # The upgrade is a reload too; its end is one datagram: MAINPID= and READY=1.
    upgrade = ["RELOADING=1", f"MAINPID={new}", "READY=1"]
    assert old_said == ["READY=1", "RELOADING=1", "READY=1", *upgrade], old_said
    # Each batch of the roll and the upgrade moved systemd's deadline (boot + drain).
    extended = [m for m in received if any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in m.fields)]
    assert len(extended) >= 2 and all(m.pid == sup.pid for m in extended), received
    new_said = [m for m in received if m.pid == new]
    assert states(new_said) == ["STOPPING=1"], new_said  # not STOPPING from the old one
    print("systemd heard:", [(m.pid, m.fields) for m in received if states([m])])


def test_an_unreachable_notify_socket_is_one_warning(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor(HELLO, "-w", "1", env={"NOTIFY_SOCKET": str(tmp_path / "none")})
    sup.wait_serving(1)
    wait_for(lambda: "notify socket" in sup.log(), 5, message=sup.log())
    sup.signal(signal.SIGHUP)
    wait_for(lambda: "Worker" in sup.log() and len(sup.serving_pids()) == 1, 10)
    assert sup.get().status_code == 200
    lines = [line for line in sup.log().splitlines() if "notify socket" in line]
    assert len(lines) == 1 and "unreachable" in lines[0] and "WARNING" in lines[0], lines


def test_a_failed_upgrade_is_ready_again_with_the_reason(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    config = tmp_path / "conf.py"
    config.write_text("workers = 1\n")
    with NotifySocket(tmp_path / "notify") as notify:
        sup = start_supervisor(HELLO, "--config", str(config), env=notify.env)
        notify.wait_for(lambda m: "READY=1" in m, 20, "READY=1")
        config.write_text("workers = (\n")
        sup.signal(signal.SIGUSR2)
        notify.wait_for(lambda m: "RELOADING=1" in m, 10, "RELOADING=1")
        again = notify.wait_for(lambda m: "READY=1" in m, 30, "READY=1 again")
        assert again.pid == sup.pid
        assert again.tags["STATUS"].startswith("upgrade failed (the new supervisor exited with")
        assert not any("MAINPID=" in f for m in notify.received for f in m.fields)
