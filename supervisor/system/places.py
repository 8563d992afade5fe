"""Where the supervisor keeps its runtime files, and whether a directory is safe for them.

A local user who can write to the directory of our control socket can
replace it with their own server (forged `status`, forged metrics for
``--metrics-path``), and one who controls the directory of our pid file can
point it at a victim file. The verdicts here are pure: they take what
``lstat`` said and return a sentence describing the problem, or None.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

APP_DIR_NAME = "asgi-supervisor"
RUN_DIR = Path("/run")
_GROUP_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


def default_dir_for(
    uid: int, xdg_runtime_dir: str | None, xdg_owner: int | None, run_usable: bool, tmpdir: str
) -> Path:
    """The directory we pick for the control socket when the user did not.

    The per-user runtime directory (``XDG_RUNTIME_DIR``, 0700 and ours by
    contract) when it is really ours; ``/run`` for root; else a per-user
    directory in the temporary directory, which anyone may pre-create, so it
    is checked before use (:func:`own_dir_problem`).
    """
    if xdg_runtime_dir and Path(xdg_runtime_dir).is_absolute() and xdg_owner == uid:
        return Path(xdg_runtime_dir) / APP_DIR_NAME
    if uid == 0 and run_usable:
        return RUN_DIR / APP_DIR_NAME
    return Path(tmpdir) / f"{APP_DIR_NAME}-{uid}"


def default_dir(environ: Mapping[str, str] | None = None) -> Path:
    """:func:`default_dir_for` with this process's facts."""
    environ = os.environ if environ is None else environ
    uid = os.geteuid()
    xdg = environ.get("XDG_RUNTIME_DIR") or None
    xdg_owner = _owner(xdg) if xdg else None
    return default_dir_for(uid, xdg, xdg_owner, uid == 0 and _run_usable(), tempfile.gettempdir())


def _owner(path: str) -> int | None:
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return info.st_uid if stat.S_ISDIR(info.st_mode) else None


def _run_usable() -> bool:
    try:
        info = RUN_DIR.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == 0
        and not info.st_mode & _GROUP_OTHER_WRITE
        and os.access(RUN_DIR, os.W_OK | os.X_OK)
    )


def _describe_owner(owner: int, uid: int) -> str:
    return f"owned by uid {owner}, not by us (uid {uid})"


def own_dir_problem(info: os.stat_result, uid: int) -> str | None:
    """A directory we picked ourselves must be ours alone: a real directory
    (not a symlink), owned by us, not writable by group or others."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    problems = []
    if info.st_uid != uid:
        problems.append(_describe_owner(info.st_uid, uid))
    if info.st_mode & _GROUP_OTHER_WRITE:
        problems.append(f"writable by group/others (mode {stat.S_IMODE(info.st_mode):04o})")
    return f"is {' and '.join(problems)}" if problems else None


def chosen_dir_problem(info: os.stat_result, uid: int) -> str | None:
    """A directory the user named (``--control-socket``, ``--pid``): ours or
    root's, and writable by group or others only when it is ours."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid not in (uid, 0):
        return f"is {_describe_owner(info.st_uid, uid)}"
    if info.st_uid != uid and info.st_mode & _GROUP_OTHER_WRITE:
        mode = stat.S_IMODE(info.st_mode)
        return f"is writable by group/others (mode {mode:04o}) and owned by uid {info.st_uid}"
    return None


def beside_pid(pid_file: str, listener_paths: Iterable[str]) -> Path:
    """The control socket next to ``--pid FILE``: ``app.pid`` -> ``app.sock``,
    or ``app.control.sock`` when ``app.sock`` is one of our own listeners."""
    plain = Path(pid_file).with_suffix(".sock")
    taken = {Path(path).absolute() for path in listener_paths}
    if plain.absolute() in taken:
        return Path(pid_file).with_suffix(".control.sock")
    return plain


def beside_pid_candidates(pid_file: str) -> list[Path]:
    """Where `status --pid FILE` looks, in order: the collision-free name
    exists only when the plain one was a listener."""
    return [Path(pid_file).with_suffix(".control.sock"), Path(pid_file).with_suffix(".sock")]
