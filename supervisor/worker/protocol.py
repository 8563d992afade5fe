"""Request observation inside uvicorn's HTTP protocol: access lines, counters, limits, for ~free.

Wrapping the ASGI app to watch each request costs a coroutine frame and a
closure per request and another per ``send``: with uvicorn's own access log
(the logging module) that halves throughput. Here the watching is done where
the server already knows everything: the request/response cycle of
uvicorn's httptools protocol. :class:`ObservedHttpTools` hands each request
cycle to :class:`ObservedCycle` (its own ``send``: the same HTTP/1.1 framing
as uvicorn's, recording the status and the body bytes as it writes them,
with the default headers serialised once a second instead of validated per
request) and, when the exchange ends, :meth:`Observer.finish` updates the
counters and queues one access line; the lines of one event-loop turn are
written together (:class:`~supervisor.logs.sink.LineSink`).

The same cycle gives, without any ASGI layer: ``Connection: close`` while
draining (so keep-alive clients move to a sibling without a cut request),
``--max-concurrent`` (from uvicorn's own task set), request ids, proxy headers
(uvicorn's rules, applied to the scope before the app runs) and the
``--metrics-path`` endpoint. Other HTTP implementations (h11, zttp) get the
same features through :class:`ObservedApp`, a plain ASGI wrapper: slower,
and the same lines.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from supervisor.notice import DRAIN_EXTENSION
from supervisor.worker.access import client_label
from supervisor.worker.guards import apply_forwarded
from supervisor.worker.observer import REQUEST_ID, Observer
from supervisor.worker.wakeup import Wakeup

perf_counter = time.perf_counter


def _noop() -> None:
    pass


class ObservedCycle(RequestResponseCycle):
    """uvicorn's httptools request/response cycle, with its own ``send`` and ``run_asgi``
    that record what the access line and the counters need as they go."""

    observer: Observer

    def __init__(  # noqa: PLR0917 - positional like uvicorn's; called once per request
        self,
        scope: Any,
        transport: asyncio.Transport,
        flow: Any,
        logger: logging.Logger,
        default_headers: list[tuple[bytes, bytes]],
        message_event: Wakeup,
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[[], None],
        target: bytes,
        method: bytes,
        client_text: str,
    ) -> None:
        # Every attribute set here, in one order: Python keeps them in one shared layout.
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = logger
        self.access_log = False
        self.default_headers = default_headers
        self.message_event = message_event  # type: ignore[assignment] # Event's interface
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self.started = perf_counter()
        self.duration = 0.0
        self.status = 499  # nothing sent: the client went away first (nginx's number)
        self.sent = 0
        self.request_id: bytes | None = None
        self.response_headers: Any = None
        self.target = target  # the request target as the client sent it
        self.method = method
        self.client_text = client_text
        self.head: bytes | None = None  # status line and headers, until the first body

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, MemoryError) and self.observer.on_memory_error is not None:
                self.observer.on_memory_error()  # --max-memory-hard: replace this worker
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = _noop
            if not self.response_complete:
                self.duration = perf_counter() - self.started
            self.observer.finish(self)

    async def send(self, message: Any) -> None:
        # One method, like uvicorn's: a helper call per message is measurable here.
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            self._start_response(message)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.scope["method"] == "HEAD":
                self.expected_content_length = 0
                out = b""
            elif self.chunked_encoding:
                out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
                if not more_body:
                    out += b"0\r\n\r\n"
                self.sent += len(body)
            else:
                size = len(body)
                if size > self.expected_content_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_content_length -= size
                out = body
                self.sent += size
            head = self.head
            if head is not None:
                self.head = None
                if out:
                    self.transport.writelines((head, out))
                else:
                    self.transport.write(head)
            elif out:
                self.transport.write(out)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.duration = perf_counter() - self.started
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already"
                " completed."
            )

    def _start_response(self, message: Any) -> None:
        """The status line and headers, held until the first body message."""
        if message["type"] != "http.response.start":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
            )
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        self.status = status
        observer = self.observer
        defaults = self.default_headers
        if defaults is observer.block_of:
            content = [STATUS_LINE[status], observer.block]
        else:
            content = [STATUS_LINE[status], observer.default_block(defaults)]
        headers = message.get("headers", ())
        close_sent = id_sent = False
        for raw_name, value in headers:
            if HEADER_RE.search(raw_name):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = raw_name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                if b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close_sent = True
            elif name == REQUEST_ID:
                id_sent = True
            content.extend((name, b": ", value, b"\r\n"))
        if observer.keep_response_headers:
            self.response_headers = headers
        if self.request_id is not None and not id_sent:
            content.append(b"x-request-id: " + self.request_id + b"\r\n")
        if observer.drain.draining:
            self.keep_alive = False  # the client moves to a sibling for its next request
        if not self.keep_alive and not close_sent:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        # Held until the first body message (the ASGI spec asks servers to wait for
        # it): head and body then leave in one writev, not two sends.
        self.head = b"".join(content)


class ObservedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, running every request through :class:`ObservedCycle`.

    Two more savings on uvicorn's per-request work, same behaviour: the
    keep-alive timeout is enforced by the worker's once-a-second sweep
    (:func:`close_idle`) from ``idle_since`` instead of a timer armed and
    cancelled per request, and the headers that only some requests carry
    (X-Forwarded-*, X-Request-Id) are noticed as the parser reports them, so
    the scans for them run only when one was sent.
    """

    observer: Observer
    raw_app: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Access lines are ours; uvicorn's access logger never runs (an app's
        # dictConfig that re-enables it cannot double the lines).
        self.access_log = False
        # Proxy headers are applied to the scope by us; the WebSocket protocol
        # still gets config.loaded_app, uvicorn's ProxyHeadersMiddleware included.
        self.app = self.raw_app
        self.client_text = "-"
        self.x_headers = False  # this request sent an X-... header
        self.idle_since = 0.0  # when the last response ended with nothing pipelined

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.client_text = client_label(self.client)  # once per connection, not per request
        self.idle_since = perf_counter()  # a new connection must send its request in time
        observer = self.observer
        if observer.fd_ceiling:
            # The kernel hands out the lowest free descriptor: a number this high means
            # at least this many are open. Cheaper than counting, once per connection.
            sock = transport.get_extra_info("socket")
            fd = sock.fileno() if sock is not None else -1
            if fd >= observer.fd_ceiling and observer.on_fd_pressure is not None:
                observer.on_fd_pressure(fd)

    def data_received(self, data: bytes) -> None:
        self.idle_since = 0.0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name[:2] == b"x-":
            self.x_headers = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # uvicorn's, making our cycle class: switching an object's class after the
        # fact costs Python 3.11 its attribute specialisation on every later access.
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        method = parser.get_method()
        scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        observer = self.observer
        scope["extensions"] = {DRAIN_EXTENSION: observer.drain.notice}  # type: ignore[dict-item]
        client_text = self.client_text
        x_headers = self.x_headers
        if x_headers:
            self.x_headers = False
            trusted = observer.trusted
            if trusted is not None and apply_forwarded(scope, trusted):
                client_text = client_label(scope["client"])
        existing = self.cycle
        self.cycle = cycle = ObservedCycle(
            scope,
            self.transport,
            self.flow,
            self.logger,
            self.server_state.default_headers,
            Wakeup(),
            self.expect_100_continue,
            http_version != "1.0" and parser.should_keep_alive(),
            self.on_response_complete,
            self.url,
            method,
            client_text,
        )
        if observer.request_ids:
            cycle.request_id = observer.request_id(scope, x_headers)
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:
            # Pipelined HTTP requests are queued until the one before has its response.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        observer = self.observer
        if observer.routes:
            app = observer.choose_app(cycle.scope, len(self.tasks), app)
        coroutine = cycle.run_asgi(app)
        if self.config.reset_contextvars:
            task = self.loop.create_task(coroutine, context=contextvars.Context())
        else:
            task = self.loop.create_task(coroutine)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.idle_since = perf_counter()


def protocol_class(observer: Observer, raw_app: Any) -> type[ObservedHttpTools]:
    """A protocol class bound to this worker's observer (one class per worker process)."""
    ObservedCycle.observer = observer
    # staticmethod: a plain function stored on a class would become a bound method.
    attributes = {"observer": observer, "raw_app": staticmethod(raw_app)}
    return type("ObservedHttpTools", (ObservedHttpTools,), attributes)


def uses_fast_path(http_protocol: Any) -> bool:
    return isinstance(http_protocol, type) and issubclass(http_protocol, HttpToolsProtocol)
