"""The --pid file: liveness verdicts and safe writing, on real files (no processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.errors import ConfigError
from supervisor.system import pidfile

OWN = 500


@pytest.mark.parametrize(
    ("text", "pid"),
    [("123\n", 123), (" 42 ", 42), ("", None), ("0\n", None), ("-5", None), ("12ab", None)],
)
def test_parse_pid(text: str, pid: int | None) -> None:
    assert pidfile.parse_pid(text) == pid


@pytest.mark.parametrize(
    ("recorded", "locked", "alive", "holder"),
    [
        (123, True, True, 123),  # a supervisor holds the lock: live
        (None, True, False, 0),  # locked but unreadable: live, pid unknown
        (123, False, True, None),  # nobody holds the lock: stale, even if 123 was reused
        (123, False, False, None),
        (123, None, True, 123),  # no flock on this filesystem: a live pid counts
        (123, None, False, None),
        (OWN, None, True, None),  # our own pid (a container restart gave it to us again)
        (None, None, True, None),
    ],
)
def test_live_holder(
    recorded: int | None, locked: bool | None, alive: bool, holder: int | None
) -> None:
    assert pidfile.live_holder(recorded, locked, alive, OWN) == holder


def test_writes_our_pid_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    held = pidfile.acquire(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]  # no temporary file left
    held.release()
    assert not path.exists()


def test_a_held_pid_file_refuses_a_second_acquire(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    held = pidfile.acquire(str(path))
    try:
        with pytest.raises(
            pidfile.AlreadyRunningError, match=f"already running as PID {os.getpid()}"
        ):
            pidfile.acquire(str(path))
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        held.release()


def test_a_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("999999\n")  # nobody holds its lock
    held = pidfile.acquire(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    held.release()


def test_a_symlink_is_replaced_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "app.pid"
    path.symlink_to(victim)
    held = pidfile.acquire(str(path))
    assert not path.is_symlink() and victim.read_text() == "precious"
    held.release()
    assert victim.read_text() == "precious"


def test_a_planted_temporary_name_does_not_redirect_the_write(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / f".app.pid.{os.getpid()}.tmp").symlink_to(victim)
    held = pidfile.acquire(str(tmp_path / "app.pid"))
    assert victim.read_text() == "precious"
    held.release()


def test_release_leaves_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    held = pidfile.acquire(str(path))
    path.unlink()
    path.write_text("4242\n")
    held.release()
    assert path.read_text() == "4242\n"


def test_a_directory_at_the_path_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "app.pid").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        pidfile.acquire(str(tmp_path / "app.pid"))
    assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]


def test_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write it"):
        pidfile.acquire(str(tmp_path / "missing" / "app.pid"))
