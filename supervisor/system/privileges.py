"""gunicorn's user/group/umask: the supervisor binds as root, each worker drops privileges.

The user and group are resolved once at start (a name or a number; one that does not
exist is one line and exit 2). A worker switches right after ``post_fork`` and before
it loads the app, as gunicorn's do: its supplementary groups become the user's
(``initgroups``), then its gid, then its uid; there is no way back. Unix sockets are
made under ``umask`` and given to the user and group, so a front proxy in that group
can connect (gunicorn's meaning of umask: the processes keep the one they inherited).
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import msgspec

from supervisor.errors import ConfigError


class Identity(msgspec.Struct, frozen=True):
    """Who the workers run as."""

    uid: int
    gid: int
    name: str | None  # the user's name, for its supplementary groups (None: a bare uid)


def resolve(user: str | int | None, group: str | int | None) -> Identity | None:
    """The workers' identity, or None when neither --user nor --group is given."""
    if user in (None, "") and group in (None, ""):
        return None
    uid, name, primary = os.getuid(), None, os.getgid()
    if user not in (None, ""):
        entry = _user_entry(str(user))
        if entry is None:
            if not str(user).isdigit():
                raise ConfigError(f"--user {user}: no such user.")
            uid = int(str(user))
        else:
            uid, name, primary = entry.pw_uid, entry.pw_name, entry.pw_gid
    gid = primary if group in (None, "") else _group_id(str(group))
    if (uid, gid) != (os.getuid(), os.getgid()) and os.geteuid() != 0:
        raise ConfigError(f"--user/--group: only root can run workers as uid {uid} gid {gid}.")
    return Identity(uid, gid, name)


def _user_entry(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return None


def _group_id(group: str) -> int:
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ConfigError(f"--group {group}: no such group.") from None


def drop(identity: Identity) -> None:
    """In a new worker: become the user for good (groups first: setgid needs root)."""
    if identity.name is not None:
        os.initgroups(identity.name, identity.gid)
    else:
        os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)


def hand_over_socket(path: Path, identity: Identity | None, umask: int | None) -> None:
    """A unix socket the supervisor made: mode from umask, owned by the workers' user."""
    path.chmod(0o666 if umask is None else 0o777 & ~umask)
    if identity is not None:
        os.chown(path, identity.uid, identity.gid)
