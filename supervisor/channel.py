"""The worker -> supervisor channel: a SOCK_SEQPACKET socketpair carrying msgpack frames.

SEQPACKET keeps message boundaries and reports EOF when the worker's end
closes. The worker sends from its event loop, so a blocked loop goes silent:
silence is how the supervisor detects a hung worker.
"""

from __future__ import annotations

import socket

import msgspec

MAX_FRAME = 64 * 1024


class Ready(msgspec.Struct, tag="ready"):
    """The worker's listeners are registered and lifespan startup finished."""

    boot_ms: float


class Heartbeat(msgspec.Struct, tag="beat"):
    """Liveness from the worker's event loop, with its counters.

    ``stats`` is an opaque, additive snapshot from the worker's optional
    features (metrics middleware); the supervisor aggregates it.
    """

    requests: int
    in_flight: int
    connections: int
    draining: bool = False
    stats: dict[str, float] | None = None


class BootFailure(msgspec.Struct, tag="boot-failure"):
    """The worker could not start; ``message`` is shown once by the supervisor."""

    exit_code: int
    message: str


Message = Ready | Heartbeat | BootFailure

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def make_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end), both non-inheritable until the fork decides."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setblocking(False)
    return parent, child


class WorkerChannel:
    """The worker's end. Sending never blocks and never raises: a supervisor that
    is busy or gone must not stall the worker's event loop."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(False)

    def send(self, message: Message) -> bool:
        try:
            self._sock.send(_encoder.encode(message))
        except OSError:
            return False
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def read_messages(sock: socket.socket) -> tuple[list[Message], bool]:
    """Drain every frame waiting on the supervisor's end; (messages, eof)."""
    messages: list[Message] = []
    while True:
        try:
            frame = sock.recv(MAX_FRAME)
        except BlockingIOError:
            return messages, False
        except OSError:
            return messages, True
        if not frame:
            return messages, True
        try:
            messages.append(_decoder.decode(frame))
        except msgspec.DecodeError:
            continue
