"""A stand-in for systemd's notify socket: what a Type=notify service tells systemd.

systemd binds an AF_UNIX datagram socket, passes its name in $NOTIFY_SOCKET
and reads each datagram with the sender's credentials (SO_PASSCRED), which is
how NotifyAccess=main tells the main pid from its children. This does the
same, so a test sees every message with the pid that sent it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_UCRED = struct.Struct("iII")  # pid_t pid, uid_t uid, gid_t gid


@dataclass(frozen=True)
class Message:
    """One datagram: its fields in order, and who sent it."""

    pid: int
    fields: tuple[str, ...]

    @property
    def tags(self) -> dict[str, str]:
        pairs = (field.partition("=") for field in self.fields)
        return {key: value for key, _, value in pairs}

    def __contains__(self, field: str) -> bool:
        return field in self.fields


class NotifySocket:
    """Bound at ``path`` (or the abstract ``@name``) until close()."""

    def __init__(self, path: Path | None = None, *, abstract: str | None = None) -> None:
        assert (path is None) != (abstract is None), "a path or an abstract name"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if path is not None:
            self.name = str(path)
            self.sock.bind(self.name)
        else:
            self.name = f"@{abstract}"
            self.sock.bind(b"\0" + str(abstract).encode())
        self.received: list[Message] = []

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.name}

    def receive(self, timeout: float) -> Message | None:
        """The next datagram, or None when none came within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
        except (TimeoutError, BlockingIOError):
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        message = Message(pid, tuple(data.decode().split("\n")))
        self.received.append(message)
        return message

    def drain(self) -> list[Message]:
        """Everything already queued, without waiting."""
        found: list[Message] = []
        while (message := self.receive(0.0 if found else 0.05)) is not None:
            found.append(message)
        return found

    def wait_for(
        self, predicate: Callable[[Message], bool], timeout: float, what: str = "a message"
    ) -> Message:
        """The first message (from now on) that satisfies ``predicate``, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout} s; received: {self.received}")

    def close(self) -> None:
        self.sock.close()
        if not self.name.startswith("@"):
            Path(self.name).unlink(missing_ok=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
