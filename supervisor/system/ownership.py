"""Socket files this process created, removed at exit only while they are still ours.

A second server may have replaced one of our paths meanwhile (a new
supervisor on the same control socket, a user's own socket at the --uds
path): removing it then would break that server. A path is ours while it
still names the file we created: same device, inode and change time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("supervisor")

Identity = tuple[int, int, int]

_claimed: dict[str, Identity] = {}


def identity(path: str | Path) -> Identity | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


def claim(path: str | Path) -> None:
    """Remember the file now at ``path`` as ours (call right after creating it)."""
    ident = identity(path)
    if ident is not None:
        _claimed[str(Path(path).absolute())] = ident


def release(path: str | Path) -> bool:
    """Remove ``path`` if it is still the file we claimed; whether it was removed."""
    ident = _claimed.pop(str(Path(path).absolute()), None)
    if ident is None:
        return False
    now = identity(path)
    if now is None:
        return False
    if now != ident:
        logger.info("Leaving %s in place: another process replaced it", path)
        return False
    try:
        Path(path).unlink()
    except OSError:
        return False
    return True
