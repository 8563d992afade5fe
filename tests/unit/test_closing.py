"""The end of a drain window, on stand-in connections (no processes): what is written."""

from __future__ import annotations

import asyncio
from typing import Any

from supervisor.worker import closing
from supervisor.worker.wakeup import Wakeup


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Cycle:
    def __init__(self, *, started: bool, chunked: bool | None, head: bytes | None = None) -> None:
        self.response_started = started
        self.response_complete = False
        self.chunked_encoding = chunked
        self.head = head
        self.disconnected = False
        self.keep_alive = True
        self.message_event = Wakeup()


class Http:
    def __init__(self, cycle: Cycle | None) -> None:
        self.cycle = cycle
        self.transport = Transport()


class WebSocket:
    """The attributes closing reads of uvicorn's sans-I/O WebSocket protocol."""

    def __init__(self, accepted: bool = True) -> None:
        self.transport = Transport()
        self.handshake_complete = accepted
        self.close_sent = False
        self.sent: list[dict[str, Any]] = []
        self.shut = False

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.close_sent = True

    def shutdown(self) -> None:
        self.shut = True


def test_a_chunked_stream_gets_the_last_chunk_and_the_app_sees_the_client_leave() -> None:
    conn = Http(Cycle(started=True, chunked=True))
    assert closing.is_open_stream(conn) and not closing.is_websocket(conn)
    assert closing.end_stream(conn) is True
    assert conn.transport.written == b"0\r\n\r\n" and conn.transport.closed
    cycle = conn.cycle
    assert cycle is not None
    assert cycle.disconnected and cycle.response_complete and not cycle.keep_alive
    assert cycle.message_event.is_set()  # a receive() waiting now returns http.disconnect


def test_a_head_held_for_the_first_body_goes_out_with_the_last_chunk() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    conn = Http(Cycle(started=True, chunked=True, head=head))
    closing.end_stream(conn)
    assert conn.transport.written == head + b"0\r\n\r\n"


def test_a_content_length_response_is_cut_and_says_so() -> None:
    conn = Http(Cycle(started=True, chunked=False))
    assert closing.end_stream(conn) is False
    assert conn.transport.written == b"" and conn.transport.closed


def test_websockets_get_1012_with_a_reason_and_unaccepted_ones_uvicorns_shutdown() -> None:
    accepted, pending = WebSocket(), WebSocket(accepted=False)
    idle = Http(None)
    stream = Http(Cycle(started=True, chunked=True))
    connections = [accepted, pending, idle, stream]
    assert closing.long_lived(connections) == (2, 1)
    counts = asyncio.run(closing.close_open_connections(connections))
    assert counts == (2, 1, 0)
    assert accepted.sent == [
        {"type": "websocket.close", "code": 1012, "reason": "server restarting"}
    ]
    assert not accepted.shut and pending.shut and pending.sent == []
    assert idle.transport.written == b"" and not idle.transport.closed
