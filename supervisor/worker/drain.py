"""A worker's drain: stop accepting, tell the app, let what is open finish, close cleanly.

uvicorn's own shutdown closes idle keep-alive connections at once, racing
with clients that are about to reuse them: that race is where Gunicorn and
``uvicorn --workers`` lose requests on every restart. Here a draining worker:

- reports at once that it drains (a SIGTERM sent to it directly must get its
  replacement started now) and keeps reporting while it drains, so the
  supervisor still sees a live event loop and catches a hung drain;
- when it is the last to accept (the whole pool stops), first serves what the
  kernel already queued on the listening sockets, then stops accepting:
  closing the last listener would reset those connections;
- tells the app at once (the drain notice, :mod:`supervisor.notice`);
- answers the next request on each keep-alive connection with
  ``Connection: close`` (the HTTP protocol reads :attr:`DrainState.draining`),
  closes connections that stay idle only after a grace window, and lets
  in-flight requests, streams and WebSockets go on for the whole graceful
  timeout (the drain window), then closes what is left properly
  (:mod:`supervisor.worker.closing`).

uvicorn's exit flag (``should_exit``) is set only when the window ends:
libraries that watch it (sse-starlette) would cut their streams at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from typing import Any, Protocol

from supervisor.channel import WorkerChannel
from supervisor.notice import NOTICE, DrainNotice
from supervisor.system import titles
from supervisor.worker import closing

logger = logging.getLogger("supervisor.worker")

DRAIN_POLL_SECONDS = 0.05
BEAT_SECONDS = 1.0
CLOSE_WAIT_SECONDS = 1.0  # after the window: for closing handshakes and the app's returns
_TCP_INFO_SIZE = 104
_UNACKED_AT = 24  # tcp_info.tcpi_unacked (after 8 u8 and 4 u32): a listener's accept queue


class Drainable(Protocol):
    """What a drain needs of the worker's server (supervisor.worker.server.WorkerServer)."""

    channel: WorkerChannel
    drain: DrainState
    server_state: Any
    servers: list[Any]
    lifespan: Any
    graceful: float
    idle_grace: float
    force_exit: bool
    should_exit: bool
    drain_clean: bool

    def send_heartbeat(self) -> None: ...


class DrainState:
    """Shared by the server and the HTTP protocol: are we draining? ``notice`` is what
    the app sees (:mod:`supervisor.notice`), set at the same moment."""

    __slots__ = ("draining", "notice")

    def __init__(self, notice: DrainNotice = NOTICE) -> None:
        self.draining = False
        self.notice = notice

    def start(self, graceful: float) -> None:
        self.draining = True
        self.notice.set(time.monotonic() + graceful)


def queued_connections(listeners: list[socket.socket]) -> int:
    """Connections the kernel accepted that no one has taken yet (TCP listeners)."""
    waiting = 0
    for sock in listeners:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
            waiting += struct.unpack_from("I", info, _UNACKED_AT)[0]
        except (OSError, struct.error):
            continue
    return waiting


async def drain(server: Drainable, listeners: list[socket.socket]) -> None:
    """The whole drain of ``server``; returns when it may exit."""
    loop = asyncio.get_running_loop()
    state = server.server_state
    message = server.channel.pending_drain()
    last = message.last if message is not None else False
    server.drain.start(server.graceful)  # the app is told now: it may close what it holds
    server.drain.draining = True
    titles.set_state("draining")
    # The supervisor learns even from a direct SIGTERM, at its next tick. Not nudged: when a
    # whole process group is TERMed, the nudge could beat the supervisor's own SIGTERM and
    # have it fork a replacement for a worker that is only stopping with it.
    server.send_heartbeat()
    logger.info(
        "Worker %d draining: %d connection(s), %d request(s) in flight",
        os.getpid(),
        len(state.connections),
        len(state.tasks),
    )
    deadline = loop.time() + server.graceful
    if last and not server.force_exit:
        await _serve_the_accept_queue(server, listeners, deadline)
    for listening in server.servers:
        listening.close()
    for sock in listeners:
        sock.close()
    await _finish_open_work(server, deadline)
    # The window is over: libraries watching uvicorn's exit flag (sse-starlette) stop now.
    server.should_exit = True
    if not server.force_exit and state.connections:
        await _close_at_deadline(server)
    if state.tasks:
        server.drain_clean = False  # requests are cut: the exit code says so
        if not server.force_exit:
            logger.error(
                "Worker %d: graceful timeout (%.1fs) exceeded; cancelling %d request(s)",
                os.getpid(),
                server.graceful,
                len(state.tasks),
            )
        for task in list(state.tasks):
            task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        await asyncio.sleep(0)
    for connection in list(state.connections):
        connection.shutdown()
    if not server.force_exit:
        await server.lifespan.shutdown()
    server.send_heartbeat()  # final counts, so the supervisor's totals never lose requests


async def _serve_the_accept_queue(
    server: Drainable, listeners: list[socket.socket], deadline: float
) -> None:
    """No sibling will accept after us: take what is queued before closing the listeners."""
    loop = asyncio.get_running_loop()
    while queued_connections(listeners) and loop.time() < deadline and not server.force_exit:
        await asyncio.sleep(DRAIN_POLL_SECONDS)


async def _finish_open_work(server: Drainable, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    state = server.server_state
    idle_close_at = loop.time() + min(server.idle_grace, server.graceful)
    for connection in list(state.connections):
        # WebSockets stay open for the window: the app closes them, or the deadline does.
        # HTTP/2 ones too until idle: uvicorn's shutdown() would answer their next streams
        # 503, and a GOAWAY now makes h2-based clients (httpx) fail the streams in flight.
        if closing.is_http2(connection) or closing.is_websocket(connection):
            continue
        if not is_idle(connection):
            connection.shutdown()  # finish the current response, then close
    idle_closed = False
    next_beat = loop.time() + BEAT_SECONDS
    while (state.connections or state.tasks) and not server.force_exit:
        now = loop.time()
        if now >= deadline:
            break
        if not idle_closed and now >= idle_close_at:
            idle_closed = True
            for connection in list(state.connections):
                if is_idle(connection):
                    connection.shutdown()
        if idle_closed:
            for connection in list(state.connections):
                if closing.is_http2(connection) and not connection.cycles:
                    connection.shutdown()  # idle now: GOAWAY (NO_ERROR), then the close
        if now >= next_beat:
            next_beat = now + BEAT_SECONDS
            server.send_heartbeat()  # a drain that hangs is caught like a hung worker
        await asyncio.sleep(DRAIN_POLL_SECONDS)


async def _close_at_deadline(server: Drainable) -> None:
    """WebSockets get 1012, streams their last chunk; their tasks get a moment to end."""
    state = server.server_state
    sockets, ended, cut = await closing.close_open_connections(state.connections)
    if cut:
        server.drain_clean = False  # a body the client sees cut short
    if sockets or ended or cut:
        logger.info(
            "Worker %d: drain window (%.1fs) over; closed %d websocket(s) with 1012,"
            " ended %d stream(s), cut %d response(s)",
            os.getpid(),
            server.graceful,
            sockets,
            ended,
            cut,
        )
    loop = asyncio.get_running_loop()
    until = loop.time() + CLOSE_WAIT_SECONDS
    while state.tasks and loop.time() < until:
        await asyncio.sleep(DRAIN_POLL_SECONDS)


def is_idle(connection: Any) -> bool:
    """An HTTP/1 connection between requests (websockets, HTTP/2 and others never are)."""
    if not hasattr(connection, "cycle"):
        return False
    cycle = connection.cycle
    return cycle is None or bool(cycle.response_complete)
