"""Putting a worker's request path together: the app, the observer, the protocol.

With httptools (uvicorn's "auto" choice when installed) everything a worker
adds lives in its protocol (:mod:`supervisor.worker.protocol`) and the app is
called as it is. Other HTTP implementations get the same features through
one ASGI layer. Proxy headers for WebSocket scopes always go through
uvicorn's own ProxyHeadersMiddleware, which the WebSocket protocol runs.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from supervisor import logs
from supervisor.config import Config
from supervisor.notice import WithDrainNotice
from supervisor.system import places
from supervisor.worker.access import DefaultLine, FormattedLine, JsonLine, LineMaker
from supervisor.worker.asgi_layer import ObservedApp
from supervisor.worker.counters import Counters
from supervisor.worker.drain import DrainState
from supervisor.worker.guards import trusted_hosts
from supervisor.worker.limits import with_limits
from supervisor.worker.observer import Observer
from supervisor.worker.protocol import protocol_class, uses_fast_path


class Observed(msgspec.Struct):
    """The worker's observer and counters; ``bind`` gives the ASGI layer uvicorn's task set."""

    observer: Observer
    counters: Counters | None
    _tasks: list[Any] = msgspec.field(default_factory=list)

    def bind(self, server_state: Any) -> None:
        self._tasks.append(server_state.tasks)

    def in_flight(self) -> int:
        return len(self._tasks[0]) if self._tasks else 0


class LoggingAccess:
    """--log-config: access records go through logging, as uvicorn's and gunicorn's do.

    ``uvicorn.access`` gets uvicorn's message and arguments (its AccessFormatter
    reads them); when the user's config gives ``gunicorn.access`` handlers,
    that logger gets the formatted line instead.
    """

    def __init__(self, formatted: FormattedLine | None) -> None:
        self.formatted = formatted
        gunicorn = logging.getLogger("gunicorn.access")
        self.gunicorn = gunicorn if gunicorn.handlers else None
        self.uvicorn = logging.getLogger("uvicorn.access")

    def __call__(self, c: Any) -> bytes:
        scope = c.scope
        if self.gunicorn is not None:
            text = self.formatted.text(c) if self.formatted else _uvicorn_text(c)
            self.gunicorn.info("%s", text)
            return b""
        client = scope.get("client")
        query: bytes = scope["query_string"]
        target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        self.uvicorn.info(
            '%s - "%s %s HTTP/%s" %d',
            f"{client[0]}:{client[1]}" if client else "",
            scope["method"],
            target,
            scope["http_version"],
            c.status,
        )
        return b""


def _uvicorn_text(c: Any) -> str:
    scope = c.scope
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else ""
    query: bytes = scope.get("query_string") or b""
    target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
    return f'{peer} - "{scope["method"]} {target} HTTP/{scope["http_version"]}" {c.status}'


def access_line(config: Config) -> LineMaker | None:
    """How this worker writes an access line, or None with the access log off."""
    if not config.access_log:
        return None
    formatted = FormattedLine(config.access_log_format) if config.access_log_format else None
    if logs.state.user_config and not config.access_log_file:
        return LoggingAccess(formatted)
    if config.log_format == "json":
        return JsonLine(logs.state.instance, formatted)
    if formatted is not None:
        return formatted
    return DefaultLine(logs.state.instance if logs.state.text_instance else "")


def observe(
    uv_config: uvicorn.Config, config: Config, drain: DrainState, supervisor_pid: int
) -> Observed:
    """Load the app into ``uv_config`` and put the observation in its request path."""
    uv_config.load()
    raw_app = uv_config.loaded_app
    # Counted only when read: by the metrics, or by a canary judging a roll.
    counted = config.metrics_bind or config.metrics_path or config.canary_seconds
    counters = Counters() if counted else None
    line = access_line(config)
    formatted = line if isinstance(line, FormattedLine) else getattr(line, "_custom", None)
    metrics_text = None
    if config.metrics_path:
        from supervisor.commands.metrics_client import fetch_metrics  # noqa: PLC0415

        control_path = places.control_socket(
            config.control_socket, config.pid, config.bind, config.uds, supervisor_pid
        )

        async def metrics_text() -> str:
            return await fetch_metrics(control_path)

    observer = Observer(
        line=line,
        sink=None if isinstance(line, LoggingAccess) else logs.state.access,  # it logged itself
        drain=drain,
        counters=counters,
        limit=config.max_concurrent or 0,
        bypass=frozenset(config.health_paths),
        slow_seconds=(config.slow_request_ms or 0) / 1000,
        request_ids=config.access_log and config.log_format == "json",
        trusted=trusted_hosts(uv_config.forwarded_allow_ips) if config.proxy_headers else None,
        keep_response_headers=bool(formatted and formatted.uses_response_headers),
        metrics_path=config.metrics_path,
        metrics_text=metrics_text,
    )
    observed = Observed(observer, counters)
    if uses_fast_path(uv_config.http_protocol_class):
        # The fast path calls raw_app itself (proxy headers are applied in the protocol).
        uv_config.http_protocol_class = protocol_class(observer, with_limits(raw_app, config))
        app = raw_app
    else:
        uv_config.http_protocol_class = _quiet(uv_config.http_protocol_class)
        observer.trusted = None  # ProxyHeadersMiddleware below covers HTTP too
        app = ObservedApp(with_limits(raw_app, config), observer, observed.in_flight)
    if config.proxy_headers:
        app = ProxyHeadersMiddleware(app, trusted_hosts=uv_config.forwarded_allow_ips)
    # WebSocket and lifespan scopes (and HTTP ones off the fast path) get the drain
    # notice here; the fast path's HTTP scopes get it from the protocol.
    uv_config.loaded_app = WithDrainNotice(app, drain.notice)
    return observed


def _quiet(protocol: type[Any]) -> type[Any]:
    """Another HTTP protocol class whose uvicorn access logging is off for good."""
    if protocol.__name__ == "AutoZttpProtocol":  # --http2: it hands each connection on
        return _quiet_dispatcher(protocol)
    original_init = protocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.access_log = False

    return type(protocol.__name__, (protocol,), {"__init__": __init__})


def _quiet_dispatcher(dispatcher: type[Any]) -> type[Any]:
    """uvicorn's --http2 dispatcher, handing connections to quiet HTTP/1.1 and HTTP/2
    protocols (it would hand them to its own, which log access lines beside ours)."""
    from uvicorn.protocols.http.zttp_h2_impl import ZttpH2Protocol  # noqa: PLC0415
    from uvicorn.protocols.http.zttp_impl import ZttpProtocol  # noqa: PLC0415

    h2, h1 = _quiet(ZttpH2Protocol), _quiet(ZttpProtocol)

    def _switch(self: Any, http2: bool, initial_data: bytes = b"") -> None:
        # As uvicorn's AutoZttpProtocol._switch, with our classes.
        protocol = (h2 if http2 else h1)(
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if initial_data:
            protocol.data_received(initial_data)

    return type(dispatcher.__name__, (dispatcher,), {"_switch": _switch})
