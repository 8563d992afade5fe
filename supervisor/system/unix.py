"""Unix-socket questions both sides ask: is something listening there, and who is it."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

_PEERCRED = struct.Struct("3i")


def is_live(path: Path | str) -> bool:
    """Does a process accept connections on the Unix socket at ``path``?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    pid, uid, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return pid, uid
