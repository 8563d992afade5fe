"""Hostile input gets 4xx with the reason, never a 500: the endpoints fuzzed with Hypothesis.

The app runs in this process on the real Redis and Postgres (what they refuse
is part of the test: Postgres rejects NUL in text), and requests go in as raw
ASGI messages, so header values can hold bytes no HTTP client would send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import App
from app.settings import load
from tests.app.asgi import lifespan
from tests.app.conftest import DATABASE_URL, REDIS_URL

pytestmark = [pytest.mark.anyio, pytest.mark.services]

MAX_BODY = 256 * 1024
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
prompts = st.text(min_size=0, max_size=60) | st.sampled_from(["a\x00b", "\x00", "ok", " "])
objects = st.fixed_dictionaries(
    {},
    optional={
        "prompt": prompts | json_values,
        "max_tokens": st.integers(-(2**70), 2**70) | json_values,
    },
).flatmap(
    lambda base: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
        lambda extra: {**extra, **base}
    )
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN: not JSON, must be a 422


def _deep(depth: int) -> bytes:
    return b'{"prompt": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}"


def _wide(width: int) -> bytes:
    fields = b",".join(b'"k%d": %d' % (i, i) for i in range(width))
    return b'{"prompt": "wide", ' + fields + b"}"


bodies = (
    objects.map(_dump)
    | json_values.map(_dump)
    | st.binary(max_size=300)
    | st.integers(1, 120_000).map(_deep)
    | st.integers(1, 15_000).map(_wide)
    | st.sampled_from([b'{"prompt": "\\ud800"}', b'{"prompt": "\\u0000"}', b'{"prompt": "\xff"}'])
)
header_values = st.binary(max_size=300)


@pytest.fixture
async def app(name: str) -> AsyncIterator[App]:
    settings_ = load(
        {},
        instance_id="fuzz",
        redis_url=REDIS_URL,
        database_url=DATABASE_URL,
        redis_prefix=name,
        db_schema=name,
        rate_limit="0",
        max_body_size=MAX_BODY,
        llm_fake_tokens=2,
        llm_fake_token_latency=0.0,
    )
    served = App(settings_)
    try:
        async with lifespan(served):
            yield served
    finally:
        conn = await asyncpg.connect(DATABASE_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


async def call(
    app: App,
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request as raw ASGI; the client is 127.0.0.1, a trusted proxy by default."""
    messages: list[dict[str, Any]] = []
    request = {"type": "http.request", "body": body, "more_body": False}
    pending = [request]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 40000),
    }
    await asyncio.wait_for(app(scope, receive, send), 30)
    start = messages[0]
    content = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start["headers"]), content


def _check(status: int, content: bytes, allowed: set[int]) -> Any:
    assert status in allowed, (status, content[:300])
    if status >= 400:
        error = msgspec.json.decode(content)
        assert error["message"] and error["error_id"], error
        return error
    return None


@FUZZ
@given(body=bodies)
async def test_post_agent_bodies(app: App, body: bytes) -> None:
    status, _, content = await call(app, "POST", "/agent", body)
    _check(status, content, {202, 413, 422})
    if status == 202:
        task_id = msgspec.json.decode(content)["task_id"]
        found, _, _ = await call(app, "GET", f"/result/{task_id}")
        assert found == 200


@FUZZ
@given(body=bodies)
async def test_post_stream_bodies(app: App, body: bytes) -> None:
    status, headers, content = await call(app, "POST", "/agent/stream", body)
    _check(status, content, {200, 413, 422})
    if status == 200:
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert b"event: done" in content


@FUZZ
@given(user=header_values, key=header_values, auth=header_values, prompt=prompts)
async def test_identity_and_idempotency_headers(
    app: App, user: bytes, key: bytes, auth: bytes, prompt: str
) -> None:
    headers = ((b"x-user-id", user), (b"idempotency-key", key), (b"authorization", auth))
    body = msgspec.json.encode({"prompt": prompt})
    status, _, content = await call(app, "POST", "/agent", body, headers)
    error = _check(status, content, {202, 422})
    if error is not None:
        reasons = ("NUL", "prompt", "Idempotency-Key", "length")
        assert any(reason in error["message"] for reason in reasons), error


@FUZZ
@given(path=st.text(max_size=80))
async def test_result_paths(app: App, path: str) -> None:
    status, _, content = await call(app, "GET", f"/result/{path}")
    _check(status, content, {404})  # random ids name no task


async def test_the_classic_offenders(app: App) -> None:
    """The inputs the issue named, with the reasons the caller gets."""
    cases = {
        b'{"prompt": "a\\u0000b"}': "prompt must not contain NUL",
        _deep(100_000): "nested too deeply",
        b'{"prompt": "\\ud800"}': "not valid JSON",
    }
    for body, reason in cases.items():
        status, _, content = await call(app, "POST", "/agent", body)
        assert status == 422 and reason in msgspec.json.decode(content)["message"], content
    status, _, _ = await call(app, "POST", "/agent", _wide(15_000))
    assert status == 202  # wide but valid: accepted, the extra fields ignored
    status, _, content = await call(
        app, "POST", "/agent", b'{"prompt": "p"}', ((b"idempotency-key", b"k\x00"),)
    )
    assert status == 422 and b"Idempotency-Key must not contain NUL" in content
