"""The end of a drain window: what is still open is closed properly, never reset.

A draining worker leaves WebSockets and streaming responses open for the whole
window (``--timeout-graceful``): the app may finish them, or tell its clients
to move (it got the drain notice at the start). At the window's end:

- a WebSocket gets a close frame with code 1012 (Service Restart) and a
  reason, through the protocol's own ASGI ``websocket.close`` (so the closing
  handshake, its timer and the app's ``websocket.disconnect`` are uvicorn's);
  the client sees a normal close, not 1006;
- a chunked streaming response (SSE, StreamingResponse) gets the last chunk
  (``0\\r\\n\\r\\n``, or h11's end of message) and the connection closes: the
  client sees a complete body that ended early (an EventSource reconnects),
  not a truncated one. The app sees the client leave (``http.disconnect``;
  its further sends are dropped), which is how Starlette and sse-starlette
  end a stream;
- a response with a Content-Length cannot end early: its connection closes
  (the client sees a short body), and the drain counts as not clean.

Then the app's tasks get a moment to return before what is left is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger("supervisor.worker")

SERVICE_RESTART = 1012  # RFC 6455 registry: "Service Restart"
CLOSE_REASON = "server restarting"
SEND_CLOSE_SECONDS = 0.5  # a client that reads nothing cannot hold the close up
LAST_CHUNK = b"0\r\n\r\n"


def is_http2(connection: Any) -> bool:
    """uvicorn's HTTP/2 protocol (zttp): many request cycles (``cycles``, by stream)."""
    return hasattr(connection, "cycles")


def is_websocket(connection: Any) -> bool:
    """uvicorn's HTTP/1 protocols all have a request cycle; its WebSocket ones do not."""
    return not hasattr(connection, "cycle") and not is_http2(connection)


def is_open_stream(connection: Any) -> bool:
    """An HTTP/1 response that started and has not ended."""
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and cycle.response_started and not cycle.response_complete


def open_h2_streams(connection: Any) -> int:
    """HTTP/2 responses on ``connection`` that started and have not ended."""
    return sum(c.response_started and not c.response_complete for c in connection.cycles.values())


def long_lived(connections: Any) -> tuple[int, int]:
    """(open WebSockets, open streams): once a second, for the heartbeat."""
    websockets = streams = 0
    for connection in connections:
        if is_http2(connection):
            streams += open_h2_streams(connection)
        elif is_websocket(connection):
            websockets += 1
        elif is_open_stream(connection):
            streams += 1
    return websockets, streams


async def close_open_connections(connections: Any) -> tuple[int, int, int]:
    """Close the WebSockets and streams still open; (websockets, streams ended, cut)."""
    sockets = [c for c in list(connections) if is_websocket(c)]
    streams = [c for c in list(connections) if is_open_stream(c)]
    cut = sum(not end_stream(c) for c in streams)
    ended = len(streams) - cut
    # HTTP/2 streams still open are cut by the close; GOAWAY comes first.
    for connection in [c for c in list(connections) if is_http2(c)]:
        cut += open_h2_streams(connection)
        goaway_and_close(connection)
    if sockets:
        await asyncio.gather(*(close_websocket(c) for c in sockets))
    return len(sockets), ended, cut


def goaway(connection: Any) -> None:
    """GOAWAY (NO_ERROR, the last stream it took): the client knows which streams were
    served. Not sent early in a drain: h2-based clients (httpx) fail their streams in
    flight on a GOAWAY instead of finishing them."""
    transport = connection.transport
    if transport is None or transport.is_closing():
        return
    connection.conn.close()
    data = connection.conn.data_to_send()
    if data:
        transport.write(data)


def goaway_and_close(connection: Any) -> None:
    """The end of the drain window: GOAWAY, then close what is still open."""
    goaway(connection)
    if connection.transport is not None:
        connection.transport.close()


async def close_websocket(connection: Any) -> None:
    """1012 and a reason, the way the app's own ``websocket.close`` would send them."""
    send = getattr(connection, "asgi_send", None) or getattr(connection, "send", None)
    if send is None or not _accepted_and_open(connection):
        connection.shutdown()  # uvicorn's: 1012 without a reason, or a 500 before the handshake
        return
    message = {"type": "websocket.close", "code": SERVICE_RESTART, "reason": CLOSE_REASON}
    try:
        await asyncio.wait_for(send(message), SEND_CLOSE_SECONDS)
    except Exception:  # gone meanwhile, or a client that reads nothing
        connection.shutdown()


def _h11_end(cycle: Any, transport: Any) -> bool:
    """h11 frames the body itself: its end of message is the last chunk, and it refuses
    one for a Content-Length body that is not all sent."""
    conn = getattr(cycle, "conn", None)
    if conn is None or transport.is_closing():
        return False
    if type(conn).__module__.startswith("zttp"):
        return _zttp_end(conn, transport)
    import h11  # noqa: PLC0415 - only with --http h11

    try:
        data = conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return False
    if data:
        transport.write(data)
    return True


def _zttp_end(conn: Any, transport: Any) -> bool:
    """zttp's HTTP/1.1 (--http zttp): its end of message is the last chunk, as h11's."""
    import zttp  # noqa: PLC0415 - only with --http zttp

    try:
        conn.end_message()
    except zttp.ProtocolError:
        return False
    data = conn.data_to_send()
    if data:
        transport.write(data)
    return True


def _accepted_and_open(connection: Any) -> bool:
    transport = getattr(connection, "transport", None)
    if transport is None or transport.is_closing():
        return False
    if hasattr(connection, "handshake_complete"):  # sans-I/O websockets, wsproto
        return bool(connection.handshake_complete) and not connection.close_sent
    handshake = getattr(connection, "handshake_completed_event", None)  # legacy websockets
    closed = getattr(connection, "closed_event", None)
    return handshake is not None and handshake.is_set() and not (closed and closed.is_set())


def end_stream(connection: Any) -> bool:
    """End a started response now; True when the client gets a complete body."""
    cycle = connection.cycle
    transport = connection.transport
    if hasattr(cycle, "chunked_encoding"):  # httptools: ours, or uvicorn's
        complete = bool(cycle.chunked_encoding)
        if complete and not transport.is_closing():
            head = getattr(cycle, "head", None)  # ours holds the head until the first body
            if head:
                cycle.head = None
            transport.write((head or b"") + LAST_CHUNK)
    else:
        complete = _h11_end(cycle, transport)
    # The app sees the client leave: receive() says http.disconnect, send() drops.
    cycle.disconnected = True
    cycle.response_complete = complete or cycle.response_complete
    cycle.keep_alive = False
    with contextlib.suppress(Exception):
        cycle.message_event.set()
    transport.close()
    return complete
