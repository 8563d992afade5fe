"""The supervisor's own tiny servers (control socket, metrics): one request per connection.

Both run on the supervisor's event loop, so a client must never be able to
stall or crash it: each connection is answered in turn, bounded by a timeout,
and any socket error only ends that connection.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import anyio

logger = logging.getLogger("supervisor")

CLIENT_TIMEOUT = 5.0


async def serve_each(
    sock: socket.socket, answer: Callable[[socket.socket], Awaitable[None]], name: str
) -> None:
    """Accept forever on a non-blocking listener; ``answer`` gets each client in turn."""
    try:
        while True:
            await anyio.wait_readable(sock)
            try:
                client, _ = sock.accept()
            except BlockingIOError:
                continue
            client.setblocking(False)
            with client, anyio.move_on_after(CLIENT_TIMEOUT):
                try:
                    await answer(client)
                except OSError as exc:
                    logger.debug("%s client went away: %s", name, exc)
    finally:
        sock.close()


async def read_until(client: socket.socket, ends: tuple[bytes, ...], limit: int) -> bytes:
    """Read until one of ``ends`` arrives, the peer hangs up, or ``limit`` bytes."""
    data = b""
    while not any(end in data for end in ends) and len(data) < limit:
        await anyio.wait_readable(client)
        try:
            chunk = client.recv(limit)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data += chunk
    return data


async def send_all(client: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(client)
        try:
            sent = client.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]
