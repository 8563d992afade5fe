"""The supervisor's own tiny servers (control socket, metrics): one request per connection.

Both run on the supervisor's event loop, so a client must never be able to
stall or crash it: every connection is answered in its own task, bounded by a
timeout, so an idle client never delays a scrape or a `status`; beyond
``MAX_CLIENTS`` open connections a new one is closed at once; and any socket
error only ends that connection.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import anyio

logger = logging.getLogger("supervisor")

CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 64
ACCEPT_ERROR_PAUSE = 0.1  # EMFILE and friends: let the loop breathe instead of spinning


async def serve_each(
    sock: socket.socket,
    answer: Callable[[socket.socket], Awaitable[None]],
    name: str,
    *,
    max_clients: int = MAX_CLIENTS,
    timeout: float = CLIENT_TIMEOUT,
) -> None:
    """Accept forever on a non-blocking listener; ``answer`` gets each client in its own task."""
    active = 0

    async def handle(client: socket.socket) -> None:
        nonlocal active
        try:
            with client, anyio.move_on_after(timeout):
                try:
                    await answer(client)
                except OSError as exc:
                    logger.debug("%s client went away: %s", name, exc)
                except Exception:  # a bug in one answer must not take the supervisor down
                    logger.exception("%s endpoint failed to answer a client", name)
        finally:
            active -= 1

    try:
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.wait_readable(sock)
                try:
                    client, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    logger.warning("%s endpoint cannot accept: %s", name, exc.strerror or exc)
                    await anyio.sleep(ACCEPT_ERROR_PAUSE)
                    continue
                if active >= max_clients:
                    logger.debug("%s endpoint: %d clients open; closing a new one", name, active)
                    client.close()
                    continue
                client.setblocking(False)
                active += 1
                tg.start_soon(handle, client)
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
