"""Where the control socket goes, and which directories are trusted with it (no processes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from supervisor.system import places

ME, ROOT, OTHER = 1000, 0, 65534


def info(kind: int, mode: int, uid: int) -> os.stat_result:
    return os.stat_result((kind | mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


DIR, LINK, FILE = stat.S_IFDIR, stat.S_IFLNK, stat.S_IFREG


@pytest.mark.parametrize(
    ("uid", "xdg", "xdg_owner", "run_usable", "expected"),
    [
        (ME, "/run/user/1000", ME, False, "/run/user/1000/asgi-supervisor"),
        (ME, "/run/user/1000", OTHER, False, "/tmp/asgi-supervisor-1000"),  # not ours
        (ME, "relative/dir", ME, False, "/tmp/asgi-supervisor-1000"),
        (ME, None, None, True, "/tmp/asgi-supervisor-1000"),  # /run is root's
        (ROOT, None, None, True, "/run/asgi-supervisor"),
        (ROOT, None, None, False, "/tmp/asgi-supervisor-0"),  # read-only /run
        (ROOT, "/run/user/0", ROOT, True, "/run/user/0/asgi-supervisor"),
    ],
)
def test_default_dir(
    uid: int, xdg: str | None, xdg_owner: int | None, run_usable: bool, expected: str
) -> None:
    assert places.default_dir_for(uid, xdg, xdg_owner, run_usable, "/tmp") == Path(expected)


@pytest.mark.parametrize(
    ("stat_info", "problem"),
    [
        (info(DIR, 0o700, ME), None),
        (info(DIR, 0o755, ME), None),
        (info(DIR, 0o770, ME), "is writable by group/others (mode 0770)"),
        (info(DIR, 0o700, OTHER), "is owned by uid 65534, not by us (uid 1000)"),
        (
            info(DIR, 0o777, OTHER),
            "is owned by uid 65534, not by us (uid 1000) and writable by group/others (mode 0777)",
        ),
        (
            info(DIR, 0o1777, ROOT),
            "is owned by uid 0, not by us (uid 1000) and writable by group/others (mode 1777)",
        ),
        (info(LINK, 0o777, ME), "is a symlink"),
        (info(FILE, 0o600, ME), "is not a directory"),
    ],
)
def test_own_dir_verdict(stat_info: os.stat_result, problem: str | None) -> None:
    assert places.own_dir_problem(stat_info, ME) == problem


@pytest.mark.parametrize(
    ("stat_info", "problem"),
    [
        (info(DIR, 0o700, ME), None),
        (info(DIR, 0o777, ME), None),  # ours: the user's own choice
        (info(DIR, 0o755, ROOT), None),  # /run, /var/run
        (info(DIR, 0o1777, ROOT), "is writable by group/others (mode 1777) and owned by uid 0"),
        (info(DIR, 0o755, OTHER), "is owned by uid 65534, not by us (uid 1000)"),
        (info(FILE, 0o644, ME), "is not a directory"),
    ],
)
def test_chosen_dir_verdict(stat_info: os.stat_result, problem: str | None) -> None:
    assert places.chosen_dir_problem(stat_info, ME) == problem


@pytest.mark.parametrize(
    ("pid_file", "listeners", "expected"),
    [
        ("run/app.pid", [], "run/app.sock"),
        ("run/app.pid", ["run/app.sock"], "run/app.control.sock"),
        ("run/app.pid", ["./run/app.sock"], "run/app.control.sock"),
        ("run/app.pid", ["other/app.sock"], "run/app.sock"),
        ("/srv/app", ["/srv/app.sock"], "/srv/app.control.sock"),
    ],
)
def test_socket_beside_pid_avoids_listeners(
    pid_file: str, listeners: list[str], expected: str
) -> None:
    assert places.beside_pid(pid_file, listeners) == Path(expected)


def test_status_looks_for_both_names_collision_free_first() -> None:
    assert places.beside_pid_candidates("run/app.pid") == [
        Path("run/app.control.sock"),
        Path("run/app.sock"),
    ]
