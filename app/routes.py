"""The endpoints: health, readiness, metrics, tasks, results and the SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from app import __version__
from app.errors import HTTPError
from app.http import Headers, Request, Send, send_json, send_response
from app.identity import Identity
from app.metrics import render as metrics_page
from app.outage import guard
from app.queue import TaskMessage
from app.ratelimit import Decision
from app.service import Service
from app.settings import describe
from app.sse import Outcome, stream_tokens

logger = logging.getLogger("app.routes")

Handler = Callable[[Service, Request, Send], Awaitable[None]]
PROBES = frozenset({"/health", "/ready", "/metrics"})
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_IDEMPOTENCY_KEY = 255
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


class AgentRequest(msgspec.Struct):
    """POST /agent and /agent/stream. Unknown fields are accepted and ignored."""

    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


async def health(service: Service, request: Request, send: Send) -> None:
    settings = service.settings
    await send_json(
        send,
        200,
        {
            "status": "healthy",
            "version": __version__,
            "title": settings.title,
            "instance_id": settings.instance_id,
        },
    )


async def ready(service: Service, request: Request, send: Send) -> None:
    is_ready, body = await service.readiness()
    body["instance_id"] = service.settings.instance_id
    body["backends"] = service.backends()
    if not is_ready:
        failing = [name for name, ok in body["checks"].items() if not ok]
        body["message"] = "Not ready: " + ", ".join(
            f"{name} ({body['errors'][name]})" for name in failing
        )
    await send_json(send, 200 if is_ready else 503, body)


async def metrics(service: Service, request: Request, send: Send) -> None:
    settings = service.settings
    if "application/json" in (request.header("accept") or ""):
        body = {
            "instance_id": settings.instance_id,
            "version": __version__,
            "metrics": service.metrics.values,
            "backends": service.backends(),
            "config": describe(settings),
        }
        await send_json(send, 200, body)
        return
    try:
        gauges = await asyncio.wait_for(service.queue.stats(), settings.ready_timeout)
    except Exception as exc:
        logger.debug("Queue statistics unavailable: %r", exc)
        gauges = {}
    text = await metrics_page(settings.instance_id, gauges)
    await send_response(send, 200, text.encode(), PROMETHEUS)


async def index(service: Service, request: Request, send: Send) -> None:
    await send_json(
        send,
        200,
        {
            "title": service.settings.title,
            "version": __version__,
            "endpoints": [
                f"{method} {path}" for path, methods in ROUTES.items() for method in methods
            ]
            + ["GET /result/{task_id}"],
        },
    )


async def _admit(service: Service, request: Request) -> tuple[Identity, Headers]:
    """The caller's identity and rate-limit headers; 401 for a bad key, 429 over the limit."""
    identity = service.identity.identify(request)
    limiter = service.limiter
    if limiter is None:
        return identity, []
    decision: Decision = await guard(limiter.kind, limiter.hit(identity.rate_key))
    if not decision.allowed:
        service.metrics.inc("rate_limited")
        raise HTTPError(
            429,
            f"Rate limit of {decision.limit} requests exceeded; retry in {decision.reset}s.",
            headers=decision.headers(),
            extra={"retry_after": decision.reset},
        )
    return identity, decision.headers()


def _storable(name: str, text: str) -> None:
    """422 for text Postgres cannot store (NUL); msgspec already refused lone surrogates."""
    if "\x00" in text:
        raise HTTPError(422, f"{name} must not contain NUL (\\u0000) characters.")


async def _agent_request(service: Service, request: Request) -> AgentRequest:
    body = await request.json(AgentRequest, service.settings.max_body_size)
    _storable("prompt", body.prompt)
    return body


async def post_agent(service: Service, request: Request, send: Send) -> None:
    identity, headers = await _admit(service, request)
    body = await _agent_request(service, request)
    key = request.header("idempotency-key")
    if key is not None:
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            raise HTTPError(422, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.")
        _storable("Idempotency-Key", key)
    store = service.store
    max_tokens = body.max_tokens or service.settings.llm_max_tokens
    new_id = uuid.uuid4().hex
    task_id, created = await guard(
        store.kind, store.create(new_id, identity.user, body.prompt, max_tokens, key)
    )
    if created:
        await _enqueue(service, TaskMessage(task_id, body.prompt, max_tokens))
    headers.append((b"location", f"/result/{task_id}".encode()))
    if not created:
        headers.append((b"idempotent-replayed", b"true"))
    await send_json(send, 202, {"task_id": task_id, "status": "pending"}, headers)


async def _enqueue(service: Service, task: TaskMessage) -> None:
    """Queue a stored task; if that fails, withdraw it, so the 503 means "not accepted"."""
    store, queue = service.store, service.queue
    try:
        message_id = await guard(queue.kind, queue.enqueue(task))
    except BaseException:
        # If even this fails the task stays pending in the store: the reconciler
        # queues it later, and a retry with the same Idempotency-Key finds it.
        with contextlib.suppress(Exception):
            await store.withdraw(task.task_id)
        raise
    service.metrics.inc("tasks_queued")
    try:
        await store.queued(task.task_id, message_id)
    except Exception as exc:  # accepted all the same: the reconciler re-queues it if lost
        logger.warning("Task %s queued, its message id not stored: %s", task.task_id, exc)


async def get_result(service: Service, request: Request, send: Send) -> None:
    task_id = request.path.removeprefix("/result/")
    store = service.store
    record = await guard(store.kind, store.get(task_id)) if _TASK_ID.match(task_id) else None
    if record is None:
        raise HTTPError(404, f"No task {task_id!r} (unknown, or its result has expired).")
    await send_json(send, 200, record.public())


async def post_stream(service: Service, request: Request, send: Send) -> None:
    _, headers = await _admit(service, request)
    body = await _agent_request(service, request)
    max_tokens = min(body.max_tokens or service.settings.llm_max_tokens, 100_000)
    metrics = service.metrics
    metrics.inc("streams")
    metrics.inc("streams_active")

    async def send_with_headers(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], *headers]
        await send(message)

    try:
        outcome = await stream_tokens(
            send_with_headers,
            request.receive,
            service.llm.stream(body.prompt, max_tokens),
            service.drained,
            stream_id=uuid.uuid4().hex[:16],
            instance_id=service.settings.instance_id,
        )
    finally:
        metrics.dec("streams_active")
    if outcome is Outcome.RECONNECT:
        metrics.inc("streams_reconnect")


ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": index},
    "/health": {"GET": health},
    "/ready": {"GET": ready},
    "/metrics": {"GET": metrics},
    "/agent": {"POST": post_agent},
    "/agent/stream": {"POST": post_stream},
}
RESULT_PREFIX = "/result/"


def resolve(method: str, path: str) -> Handler:
    """The handler for a request; 404 for an unknown path, 405 with Allow for a method."""
    methods = ROUTES.get(path)
    if methods is None and path.startswith(RESULT_PREFIX) and len(path) > len(RESULT_PREFIX):
        methods = {"GET": get_result}
    if methods is None:
        raise HTTPError(404, f"No endpoint at {path}.")
    handler = methods.get(method)
    if handler is None:
        allow = ", ".join(methods)
        raise HTTPError(
            405,
            f"{method} is not allowed on {path}; use {allow}.",
            headers=[(b"allow", allow.encode())],
        )
    return handler
