"""The channel between a worker and its supervisor: a SOCK_SEQPACKET socketpair of msgpack frames.

SEQPACKET keeps message boundaries and reports EOF when the worker's end
closes. The worker sends from its event loop, so a blocked loop goes silent:
silence is how the supervisor detects a hung worker. The supervisor sends
one kind of message the other way, :class:`Drain`, just before the SIGTERM
that starts a drain, so that the worker knows what kind of drain it is.
"""

from __future__ import annotations

import contextlib
import socket

import msgspec

MAX_FRAME = 64 * 1024


class Ready(msgspec.Struct, tag="ready"):
    """The worker's listeners are registered and lifespan startup finished."""

    boot_ms: float


class Heartbeat(msgspec.Struct, tag="beat"):
    """Liveness from the worker's event loop, with its counters.

    ``stats`` is an opaque, additive snapshot from the worker's optional
    features (request counters, log stalls); the supervisor aggregates it.
    ``draining``: the worker is draining (told to, or on its own: a SIGTERM sent
    to it directly). ``recycle``: the worker asks to be replaced ("fd-limit":
    it stopped accepting near its open-file limit; "memory-hard": an allocation
    failed at --max-memory-hard). ``in_flight`` counts WebSockets too (each is a
    task of the worker); ``websockets`` and ``streams`` are those open now (a
    stream: an HTTP response started and not ended), ``websocket_sessions`` those
    that reached the app since the worker started.
    """

    requests: int
    in_flight: int
    connections: int
    draining: bool = False
    websockets: int = 0
    streams: int = 0
    websocket_sessions: int = 0
    recycle: str | None = None
    stats: dict[str, float] | None = None


class BootFailure(msgspec.Struct, tag="boot-failure"):
    """The worker could not start; ``message`` is shown once by the supervisor."""

    exit_code: int
    message: str


class Drain(msgspec.Struct, tag="drain"):
    """Supervisor -> worker, before SIGTERM. ``last``: no sibling will accept after this
    worker (the whole pool stops), so it first serves what the kernel already queued."""

    last: bool = False


Message = Ready | Heartbeat | BootFailure

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_drain_decoder = msgspec.msgpack.Decoder(Drain)


def send_drain(sock: socket.socket, last: bool) -> None:
    """Best effort: a worker whose channel is full is hung, and handled as such."""
    with contextlib.suppress(OSError):
        sock.send(_encoder.encode(Drain(last=last)))


def pending_drain(sock: socket.socket) -> Drain | None:
    """In the worker: the Drain the supervisor sent, if any (never blocks)."""
    found: Drain | None = None
    while True:
        try:
            frame = sock.recv(MAX_FRAME, socket.MSG_DONTWAIT)
        except OSError:
            return found
        if not frame:
            return found
        try:
            found = _drain_decoder.decode(frame)
        except msgspec.DecodeError:
            continue


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

    def pending_drain(self) -> Drain | None:
        return pending_drain(self._sock)

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
