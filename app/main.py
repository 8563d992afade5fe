"""The ASGI application: ``app.main:app``.

Lifespan startup reads and validates the settings and opens this worker's
pools; a bad setting or an unreachable configured backend fails startup with
one line (the server exits: the supervisor with code 3). Shutdown drains the
consumer and closes the pools.

Drain: under the supervisor, the lifespan scope carries the drain notice
(``scope["extensions"]["supervisor.drain"]``, set the moment the worker starts
draining; it reaches the app through any middleware), and the app drains its
service when it is set. Under uvicorn or gunicorn, which have no such notice,
the app chains itself to the server's SIGTERM/SIGINT handler instead, so
streams still end with a reconnect event rather than being cut.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

from app.errors import BackendUnavailable, ConfigError, HTTPError
from app.http import (
    Receive,
    Request,
    Scope,
    Send,
    error_body,
    new_error_id,
    send_error,
    send_internal_error,
    send_json,
)
from app.outage import OneLineOutages, failing_check, invalid_data, unavailable
from app.routes import PROBES, resolve
from app.service import Service
from app.settings import Settings, load

logger = logging.getLogger("app")

INSTANCE_HEADER = b"x-fastagentic-instance"
RETRY_AFTER_SECONDS = 1
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_EXTENSION = "supervisor.drain"  # the supervisor's drain notice (app/ imports no supervisor)


class App:
    """The service as one raw ASGI callable."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self.service: Service | None = None
        self.in_flight = 0
        self._instance = b""
        self._chained: dict[int, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    def on_drain(self) -> None:
        """This worker starts draining (the drain notice, or the server's SIGTERM)."""
        if self.service is not None:
            self.service.drain()

    # HTTP ------------------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        instance = (INSTANCE_HEADER, self._instance)

        async def send_tagged(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), instance]
            await send(message)

        service = self.service
        if service is None:
            error = HTTPError(503, "The service is not started (is the ASGI lifespan disabled?).")
            await send_error(send_tagged, error)
            return
        limit = service.settings.max_concurrent
        counted = scope["path"] not in PROBES  # probes bypass --max-concurrent
        if counted:
            if limit is not None and self.in_flight >= limit:
                await self._overloaded(service, send_tagged)
                return
            self.in_flight += 1
            service.metrics.set("requests_in_flight", self.in_flight)
        try:
            request = Request(scope, receive)
            handler = resolve(request.method, request.path)
            await handler(service, request, send_tagged)
        except HTTPError as exc:
            if not started:
                await send_error(send_tagged, exc)
        except Exception as exc:
            await self._failure(service, send_tagged, exc, started)
        finally:
            service.metrics.inc("requests")
            if counted:
                self.in_flight -= 1
                service.metrics.set("requests_in_flight", self.in_flight)

    async def _overloaded(self, service: Service, send: Send) -> None:
        service.metrics.inc("overloaded")
        body = error_body(503, "Too many concurrent requests", new_error_id(), retry_after=1)
        body["error"] = "Service temporarily unavailable"
        await send_json(send, 503, body, [(b"retry-after", b"1")])

    async def _failure(self, service: Service, send: Send, exc: Exception, started: bool) -> None:
        """503 naming the backend that is down, 422 for a value it refused, else 500."""
        check = failing_check(exc)
        if check is not None:
            if not isinstance(exc, BackendUnavailable):
                exc = unavailable(check, exc)
            service.metrics.inc("backend_unavailable")
            await self._backend_error(send, exc, started)
        elif (reason := invalid_data(exc)) is not None:
            if not started:
                await send_error(send, HTTPError(422, f"The store refused a value: {reason}."))
        else:
            await send_internal_error(send, exc, started)

    async def _backend_error(self, send: Send, exc: BackendUnavailable, started: bool) -> None:
        error_id = new_error_id()
        check = exc.check or "backend"
        logger.warning("Backend unavailable [%s] (%s): %s", error_id, check, exc)
        if not started:
            body = error_body(503, str(exc), error_id, check=check, retry_after=RETRY_AFTER_SECONDS)
            headers = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
            await send_json(send, 503, body, headers)

    # Lifespan ----------------------------------------------------------------

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            service = await self.startup()
        except (ConfigError, BackendUnavailable) as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        except Exception as exc:
            error_id = new_error_id()
            logger.error("Startup failed [%s]", error_id, exc_info=exc)
            text = f"Startup failed [{error_id}]: {exc!r}"
            await send({"type": "lifespan.startup.failed", "message": text})
            return
        notice = (scope.get("extensions") or {}).get(DRAIN_EXTENSION)
        watch = asyncio.ensure_future(self._drain_on(notice)) if notice is not None else None
        if watch is None:
            self._chain_drain_signals()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if watch is not None:
            watch.cancel()
        self._unchain_drain_signals()
        try:
            await service.stop()
        except Exception as exc:
            logger.error("Shutdown failed", exc_info=exc)
        self.service = None
        await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> Service:
        settings = self._settings or load()
        _configure_logging(settings.log_level)
        self._instance = settings.instance_id.encode("latin-1", "replace")
        service = Service(settings)
        await service.start()
        self.service = service
        logger.info(
            "%s ready (instance %s; backends %s)",
            settings.title,
            settings.instance_id,
            service.backends(),
        )
        return service

    async def _drain_on(self, notice: Any) -> None:
        """The supervisor's drain notice: an awaitable set when this worker drains."""
        await notice
        self.on_drain()

    def _chain_drain_signals(self) -> None:
        """Run ``on_drain`` when the server's own SIGTERM/SIGINT handler runs.

        Only a Python-level handler installed by the server is chained (uvicorn,
        gunicorn's UvicornWorker, our worker); default dispositions are left alone.
        """
        loop = asyncio.get_running_loop()
        for sig in DRAIN_SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def chained(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                previous(signum, frame)
                loop.call_soon_threadsafe(self.on_drain)

            try:
                signal.signal(sig, chained)
            except ValueError:  # not the main thread
                return
            self._chained[sig] = previous

    def _unchain_drain_signals(self) -> None:
        for sig, previous in self._chained.items():
            try:
                signal.signal(sig, previous)
            except ValueError:
                break
        self._chained.clear()


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:  # plain uvicorn/gunicorn: nobody configured the root logger
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(handler)
    logger.setLevel(level.upper())
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineOutages) for f in pool_logger.filters):
        pool_logger.addFilter(OneLineOutages())


app = App()
