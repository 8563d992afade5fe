"""The reference service without processes: pure parts, and the ASGI app in memory mode."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app import launcher
from app.breaker import BreakerState, CircuitBreaker
from app.consumer import backoff
from app.errors import BackendUnavailable, CircuitOpen, ConfigError, HTTPError, LLMError
from app.http import Request
from app.identity import Authenticator, TrustedProxies, anonymous_bucket, hash_key
from app.llm import FakeLLM, OpenAIClient
from app.main import App
from app.outage import OneLineOutages, failing_check, guard
from app.queue import MemoryQueue, Place, TaskMessage
from app.ratelimit import MemoryRateLimiter, decide
from app.settings import Settings, describe, load, parse_rate_limit
from app.sse import format_event
from supervisor.notice import DrainNotice
from tests.app.asgi import StartupFailed, lifespan, never, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(**overrides: Any) -> Settings:
    values = {"instance_id": "unit", "llm_fake_tokens": 3, "llm_fake_token_latency": 0.0}
    values.update(overrides)
    return load({}, **values)


# Settings --------------------------------------------------------------------


def test_defaults_match_the_seed() -> None:
    s = load({})
    assert (s.redis_pool_size, s.redis_pool_timeout) == (10, 5.0)
    assert (s.db_pool_size, s.db_max_overflow) == (5, 10)
    assert (s.timeout_keep_alive, s.timeout_graceful) == (5.0, 30.0)
    assert s.rate_limit_rule == (60, 3600)
    assert s.max_concurrent is None and s.redis_url is None and s.database_url is None
    assert s.instance_id  # hostname-ppid


def test_environment_names_and_aliases() -> None:
    s = load(
        {
            "FASTAGENTIC_REDIS_POOL_SIZE": "20",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT": "2.5",
            "FASTAGENTIC_DB_POOL_SIZE": "10",
            "FASTAGENTIC_DB_MAX_OVERFLOW": "20",
            "FASTAGENTIC_TIMEOUT_KEEP_ALIVE": "75",
            "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN": "60",
            "FASTAGENTIC_MAX_CONCURRENT": "100",
            "REDIS_URL": "redis://cache:6379/0",
            "DATABASE_URL": "postgresql+asyncpg://u:secret@db/app",
            "FASTAGENTIC_DATABASE_URL": "",  # empty counts as unset
            "SUPERVISOR_INSTANCE_ID": "from-supervisor",
            "FASTAGENTIC_RATE_LIMIT": "100/minute",
        }
    )
    assert (s.redis_pool_size, s.redis_pool_timeout, s.db_pool_size, s.db_max_overflow) == (
        20,
        2.5,
        10,
        20,
    )
    assert (s.timeout_keep_alive, s.timeout_graceful, s.max_concurrent) == (75.0, 60.0, 100)
    assert s.redis_url == "redis://cache:6379/0"
    assert s.db_dsn == "postgresql://u:secret@db/app"
    assert s.instance_id == "from-supervisor"
    assert s.rate_limit_rule == (100, 60)
    assert describe(s)["database_url"] == "postgresql+asyncpg://u:***@db/app"
    both = {"FASTAGENTIC_INSTANCE_ID": "mine", "SUPERVISOR_INSTANCE_ID": "theirs"}
    assert load(both).instance_id == "mine"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"FASTAGENTIC_REDIS_POOL_SIZE": "0"},
            "FASTAGENTIC_REDIS_POOL_SIZE='0': Expected `int` >= 1",
        ),
        ({"FASTAGENTIC_DB_POOL_SIZE": "many"}, "FASTAGENTIC_DB_POOL_SIZE='many': Expected `int`"),
        ({"FASTAGENTIC_REDIS_URL": "http://x"}, "FASTAGENTIC_REDIS_URL='http://x' is not a redis"),
        ({"DATABASE_URL": "mysql://u:pw@x/db"}, "FASTAGENTIC_DATABASE_URL='mysql://u:***@x/db'"),
        ({"FASTAGENTIC_RATE_LIMIT": "lots"}, "FASTAGENTIC_RATE_LIMIT='lots': use"),
        ({"FASTAGENTIC_DB_SCHEMA": "x; drop"}, "FASTAGENTIC_DB_SCHEMA='x; drop'"),
        ({"FASTAGENTIC_TIMEOUT_GRACEFUL": "-1"}, "FASTAGENTIC_TIMEOUT_GRACEFUL='-1'"),
    ],
)
def test_bad_settings_are_one_clear_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "pw" not in message


def test_rate_limit_rules() -> None:
    assert parse_rate_limit("60/hour") == (60, 3600)
    assert parse_rate_limit("60") == (60, 3600)
    assert parse_rate_limit("5 / minute") == (5, 60)
    assert parse_rate_limit("10/30seconds") == (10, 30)
    assert parse_rate_limit("0") == (0, 3600)
    with pytest.raises(ValueError, match="RATE_LIMIT"):
        parse_rate_limit("10/fortnight")


# Pure pieces -------------------------------------------------------------------


def test_circuit_breaker_opens_cools_down_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_seconds=10, clock=lambda: now[0])
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == 10
    now[0] = 10.0
    assert breaker.allow()  # half-open: one trial
    assert not breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n, 0.5) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(20, 0.5) == 30.0
    assert backoff(3, 0.0) == 0.0


async def test_memory_rate_limit_window_and_headers() -> None:
    now = [100.0]
    limiter = MemoryRateLimiter(2, 60, clock=lambda: now[0])
    first, second, third = [await limiter.hit("u") for _ in range(3)]
    assert (first.allowed, first.remaining) == (True, 1)
    assert (second.allowed, second.remaining) == (True, 0)
    assert not third.allowed and third.reset == 60
    assert (b"retry-after", b"60") in third.headers()
    assert (await limiter.hit("other")).allowed
    now[0] = 160.0
    assert (await limiter.hit("u")).allowed
    assert decide(5, 1, 1).reset == 1  # never advertise a 0 s reset


def _request(client: tuple[str, int] | None, *headers: tuple[bytes, bytes]) -> Request:
    scope = {"method": "GET", "path": "/", "headers": list(headers), "client": client}
    return Request(scope, never)


def test_identity_from_trusted_proxies_only() -> None:
    auth = Authenticator({}, TrustedProxies("10.0.0.0/8, 127.0.0.1"))
    alice = (b"x-user-id", b"alice")
    proxied = auth.identify(_request(("10.1.2.3", 4711), alice))
    assert (proxied.user, proxied.how) == ("user:alice", "proxy")
    assert "alice" not in proxied.rate_key  # bounded length whatever the id
    direct = auth.identify(_request(("1.2.3.4", 4711), alice))
    assert (direct.user, direct.how) == ("ip:1.2.3.4", "anonymous")
    # The server replaced a trusted peer by the X-Forwarded-For client (port 0).
    forwarded = auth.identify(_request(("1.2.3.4", 0), alice, (b"x-forwarded-for", b"1.2.3.4")))
    assert forwarded.user == "user:alice"
    # Port 0 without the header is not the server's doing; neither is a forged port.
    assert auth.identify(_request(("1.2.3.4", 0), alice)).how == "anonymous"
    forged = _request(("1.2.3.4", 5000), alice, (b"x-forwarded-for", b"1.2.3.4:5000"))
    assert auth.identify(forged).how == "anonymous"
    assert auth.identify(_request(None, alice)).how == "anonymous"
    assert Authenticator({}, TrustedProxies("*")).identify(_request(None, alice)).how == "proxy"
    with pytest.raises(HTTPError) as nul:
        auth.identify(_request(("127.0.0.1", 1), (b"x-user-id", b"a\x00b")))
    assert nul.value.status == 422


def test_identity_from_api_keys() -> None:
    keys = {hash_key("sk-alice"): "alice", hash_key("sk-bob"): "bob"}
    auth = Authenticator(keys, TrustedProxies("127.0.0.1"))
    bearer = auth.identify(_request(("1.2.3.4", 9), (b"authorization", b"Bearer sk-alice")))
    assert (bearer.user, bearer.rate_key, bearer.how) == ("key:alice", "key:alice", "api-key")
    assert auth.identify(_request(("1.2.3.4", 9), (b"x-api-key", b"sk-bob"))).user == "key:bob"
    # A key outranks X-User-Id, even from a trusted proxy.
    both = _request(("127.0.0.1", 9), (b"x-api-key", b"sk-bob"), (b"x-user-id", b"alice"))
    assert auth.identify(both).user == "key:bob"
    with pytest.raises(HTTPError) as unknown:
        auth.identify(_request(("1.2.3.4", 9), (b"authorization", b"Bearer sk-guess")))
    assert unknown.value.status == 401
    assert unknown.value.headers == [(b"www-authenticate", b'Bearer realm="fastagentic"')]
    # Without configured keys a key proves nothing: the caller stays anonymous.
    open_ = Authenticator({}, TrustedProxies("127.0.0.1"))
    rotated = {
        open_.identify(_request(("1.2.3.4", 9), (b"x-api-key", f"k{i}".encode())))
        for i in range(50)
    }
    assert len(rotated) == 1


def test_anonymous_callers_share_a_bounded_keyspace() -> None:
    buckets = {anonymous_bucket(f"10.{i // 256 % 256}.{i % 256}.7") for i in range(20_000)}
    assert len(buckets) <= 65_536 and all(b.startswith("anon:") for b in buckets)
    # A whole IPv6 /64 is one caller; IPv4-mapped IPv6 is the IPv4 address.
    assert anonymous_bucket("2001:db8::1") == anonymous_bucket("2001:db8::ffff:1234")
    assert anonymous_bucket("::ffff:1.2.3.4") == anonymous_bucket("1.2.3.4")
    assert anonymous_bucket("2001:db8:0:1::1") != anonymous_bucket("2001:db8::1")


def test_api_keys_settings_fail_fast(tmp_path: Path) -> None:
    digest = hash_key("sk-1")
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# team keys\nalice:{digest}\n\nbob:{hash_key('sk-2')}  # on call\n")
    inline = f"{hash_key('sk-3')}, carol:{hash_key('sk-4')}"
    s = load({"FASTAGENTIC_API_KEYS_FILE": str(keyfile), "FASTAGENTIC_API_KEYS": inline})
    assert describe(s)["api_keys"] == 4  # hashes are never shown
    with pytest.raises(ConfigError, match="configured twice"):
        load({"FASTAGENTIC_API_KEYS_FILE": str(keyfile), "FASTAGENTIC_API_KEYS": digest})
    with pytest.raises(ConfigError, match="entry 1 is not NAME:SHA256"):
        load({"FASTAGENTIC_API_KEYS": "alice:sk-plain-text"})
    with pytest.raises(ConfigError, match="cannot be read"):
        load({"FASTAGENTIC_API_KEYS_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="repeats the key"):
        load({"FASTAGENTIC_API_KEYS": f"a:{digest},b:{digest}"})
    aliased = load({"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert aliased.trusted_proxies == "10.0.0.1"
    assert load({}).trusted_proxies == "127.0.0.1,::1"


def test_sse_event_format() -> None:
    assert format_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert format_event({}, event="reconnect", event_id="s:3", retry_ms=1000) == (
        b"event: reconnect\nid: s:3\nretry: 1000\ndata: {}\n\n"
    )


async def test_fake_llm_is_deterministic_and_can_fail() -> None:
    llm = FakeLLM(tokens=5, token_latency=0)
    first = await llm.complete("same prompt", 100)
    assert first == await llm.complete("same prompt", 100)
    assert len(first.split()) == 5
    assert len((await llm.complete("same prompt", 2)).split()) == 2
    with pytest.raises(LLMError):
        await llm.complete("fail: please", 5)
    with pytest.raises(LLMError):
        await llm.complete("flaky: once", 5)
    assert await llm.complete("flaky: once", 5)


# OpenAI-compatible client, against a small OpenAI-shaped ASGI server ---------


async def _openai(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.loads((await receive())["body"])
    prompt = body["messages"][0]["content"]
    if prompt == "boom":
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"overloaded"})
        return
    if body["stream"]:
        chunks = [{"choices": [{"delta": {"content": word}}]} for word in ("Hel", "lo")]
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        headers = [(b"content-type", b"text/event-stream")]
    else:
        text = json.dumps({"choices": [{"message": {"content": f"echo {prompt}"}}]})
        headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})


async def test_openai_client_completes_streams_and_breaks_the_circuit() -> None:
    s = settings(llm_base_url="http://llm.test/v1", llm_breaker_threshold=2)
    client = OpenAIClient(s, transport=httpx.ASGITransport(app=_openai))
    try:
        assert await client.complete("hi", 5) == "echo hi"
        assert [t async for t in client.stream("hi", 5)] == ["Hel", "lo"]
        for _ in range(2):
            with pytest.raises(LLMError, match="503"):
                await client.complete("boom", 5)
        with pytest.raises(CircuitOpen):
            await client.complete("hi", 5)
    finally:
        await client.aclose()


# The ASGI app, memory backends -------------------------------------------------


@contextlib.asynccontextmanager
async def client_for(**overrides: Any) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with serve(settings(**overrides)) as served:
        yield served


async def _wait_status(client: httpx.AsyncClient, task_id: str, timeout: float = 5) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client.get(f"/result/{task_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.01)


async def test_health_ready_metrics_and_instance_header() -> None:
    async with client_for() as (_, client):
        health = await client.get("/health")
        assert health.json() == {
            "status": "healthy",
            "version": "1.0.0",
            "title": "FastAgentic Agent",
            "instance_id": "unit",
        }
        assert health.headers["x-fastagentic-instance"] == "unit"
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["backends"] == {
            "queue": "memory",
            "store": "memory",
            "rate_limit": "memory",
            "llm": "fake",
        }
        text = (await client.get("/metrics")).text
        assert 'fastagentic_requests_total{instance_id="unit"' in text
        assert "# TYPE fastagentic_tasks_queued_total counter" in text
        config = (await client.get("/metrics", headers={"accept": "application/json"})).json()
        assert config["instance_id"] == "unit" and config["config"]["redis_pool_size"] == 10


async def test_task_round_trip_retry_and_failure() -> None:
    async with client_for(task_retry_backoff=0.0, task_max_attempts=2) as (app, client):
        accepted = await client.post("/agent", json={"prompt": "hello"})
        assert accepted.status_code == 202
        task_id = accepted.json()["task_id"]
        assert accepted.headers["location"] == f"/result/{task_id}"
        done = await _wait_status(client, task_id)
        assert done["status"] == "done" and done["result"] == await FakeLLM(3, 0).complete(
            "hello", 256
        )
        flaky = (await client.post("/agent", json={"prompt": "flaky: x"})).json()["task_id"]
        assert (await _wait_status(client, flaky))["attempts"] == 2
        failing = (await client.post("/agent", json={"prompt": "fail: x"})).json()["task_id"]
        failed = await _wait_status(client, failing)
        assert failed["status"] == "failed" and "after 2 attempt" in failed["error"]
        assert app.service is not None
        assert app.service.metrics["tasks_failed"] == 1 and app.service.metrics["tasks_done"] == 2


async def test_idempotency_key_per_user() -> None:
    async with client_for() as (_, client):
        alice = {"idempotency-key": "k-1", "x-user-id": "alice"}
        first = await client.post("/agent", json={"prompt": "a"}, headers=alice)
        again = await client.post("/agent", json={"prompt": "a"}, headers=alice)
        assert first.json()["task_id"] == again.json()["task_id"]
        assert again.headers["idempotent-replayed"] == "true"
        bob = await client.post("/agent", json={"prompt": "a"}, headers={**alice, "x-user-id": "b"})
        assert bob.json()["task_id"] != first.json()["task_id"]


async def test_rate_limit_answers_429_with_headers() -> None:
    async with client_for(rate_limit="2/minute") as (_, client):
        user = {"x-user-id": "carol"}
        codes = [
            (await client.post("/agent", json={"prompt": "p"}, headers=user)) for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [202, 202, 429]
        limited = codes[2]
        assert limited.headers["retry-after"] == limited.headers["x-ratelimit-reset"]
        assert 0 < int(limited.headers["retry-after"]) <= 60
        assert limited.headers["x-ratelimit-limit"] == "2"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert set(limited.json()) >= {"error", "message", "error_id"}
        other = await client.post("/agent", json={"prompt": "p"}, headers={"x-user-id": "dan"})
        assert other.status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "fragment"),
    [
        ("GET", "/nowhere", None, 404, "No endpoint"),
        ("GET", "/result/unknown", None, 404, "No task"),
        ("GET", "/result/../../etc", None, 404, "No"),
        ("DELETE", "/agent", None, 405, "use POST"),
        ("POST", "/agent", b"", 422, "empty"),
        ("POST", "/agent", b"{not json", 422, "not valid JSON"),
        ("POST", "/agent", b'{"prompt": 3}', 422, "Expected `str`, got `int` - at `$.prompt`"),
        ("POST", "/agent", b"{}", 422, "missing required field `prompt`"),
        ("POST", "/agent", b'{"prompt": ""}', 422, "length >= 1"),
        ("POST", "/agent", b"[1, 2]", 422, "Expected `object`"),
        ("POST", "/agent", b'{"prompt": "x", "max_tokens": -1}', 422, "max_tokens"),
        ("POST", "/agent/stream", b'"text"', 422, "Expected `object`"),
        ("POST", "/agent", b'{"prompt": "' + b"x" * 3000 + b'"}', 413, "exceeds"),
    ],
)
async def test_bad_requests_get_uniform_json_errors(
    method: str, path: str, content: bytes | None, status: int, fragment: str
) -> None:
    async with client_for(max_body_size=2048) as (_, client):
        response = await client.request(method, path, content=content)
        assert response.status_code == status
        body = response.json()
        assert set(body) >= {"error", "message", "error_id"}
        assert fragment in body["message"]
        assert response.headers["x-fastagentic-instance"] == "unit"
        if status == 405:
            assert response.headers["allow"] == "POST"


async def test_unexpected_errors_are_500_with_a_logged_error_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for() as (app, client):
        assert app.service is not None

        async def broken(*args: Any) -> Any:
            raise RuntimeError("bug")

        app.service.store.get = broken  # type: ignore[method-assign]
        response = await client.get("/result/abc")
        assert response.status_code == 500
        error_id = response.json()["error_id"]
        assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)


# Raw ASGI: streams, drain, concurrency ------------------------------------------


class Call:
    """One raw HTTP request into the app, its response collected as it comes."""

    def __init__(self, app: App, method: str, path: str, body: bytes = b"") -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.more = asyncio.Event()
        self.disconnect = asyncio.Event()
        self._body = body
        scope = {"type": "http", "method": method, "path": path, "headers": [], "client": None}
        self.task = asyncio.create_task(app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None  # type: ignore[assignment]
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
        else:
            self.chunks.append(message.get("body", b""))
        self.more.set()

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()

    async def wait_for_text(self, fragment: str, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while fragment not in self.text:
                self.more.clear()
                await self.more.wait()


async def test_the_drain_notice_in_the_lifespan_scope_ends_streams_with_reconnect() -> None:
    """Under the supervisor the app listens to the notice its lifespan scope carries
    (no attribute lookup on the app, so it works behind any middleware)."""
    notice = DrainNotice()
    app = App(settings(llm_fake_tokens=1000, llm_fake_token_latency=0.01))
    scope = {"type": "lifespan", "extensions": {"supervisor.drain": notice}}
    async with lifespan(app, scope):
        call = Call(app, "POST", "/agent/stream", b'{"prompt": "long"}')
        await call.wait_for_text('"token"')
        await asyncio.sleep(0.05)
        assert not call.task.done()  # the notice is not set: the stream goes on
        notice.set()
        await asyncio.wait_for(call.task, 5)
        assert call.text.rstrip().split("\n\n")[-1].startswith("event: reconnect\n")
        assert app.service is not None and app.service.draining


async def test_stream_ends_with_reconnect_on_drain_and_ready_turns_503() -> None:
    app = App(settings(llm_fake_tokens=1000, llm_fake_token_latency=0.01))
    async with lifespan(app):
        call = Call(app, "POST", "/agent/stream", b'{"prompt": "long"}')
        await call.wait_for_text('"token"')
        assert call.headers[b"content-type"].startswith(b"text/event-stream")
        app.on_drain()
        await asyncio.wait_for(call.task, 5)
        assert call.text.rstrip().split("\n\n")[-1].startswith("event: reconnect\nretry: 1000\n")
        ready = Call(app, "GET", "/ready")
        await asyncio.wait_for(ready.task, 5)
        assert ready.status == 503
        assert json.loads(ready.text)["checks"]["app"] is False
        assert app.service is not None and app.service.metrics["streams_reconnect"] == 1


async def test_stream_runs_to_done_and_stops_when_the_client_leaves() -> None:
    app = App(settings(llm_fake_tokens=3))
    async with lifespan(app):
        call = Call(app, "POST", "/agent/stream", b'{"prompt": "short"}')
        await asyncio.wait_for(call.task, 5)
        assert call.text.count('"token"') == 3 and "event: done" in call.text
        slow = App(settings(llm_fake_tokens=1000, llm_fake_token_latency=0.01))
        async with lifespan(slow):
            gone = Call(slow, "POST", "/agent/stream", b'{"prompt": "x"}')
            await gone.wait_for_text('"token"')
            gone.disconnect.set()
            await asyncio.wait_for(gone.task, 5)
            assert slow.service is not None and slow.service.metrics["streams_active"] == 0


async def test_max_concurrent_answers_503_but_probes_pass() -> None:
    app = App(settings(max_concurrent=1, llm_fake_tokens=1000, llm_fake_token_latency=0.01))
    async with lifespan(app):
        holder = Call(app, "POST", "/agent/stream", b'{"prompt": "hold"}')
        await holder.wait_for_text('"token"')
        refused = Call(app, "POST", "/agent", b'{"prompt": "x"}')
        await asyncio.wait_for(refused.task, 5)
        assert refused.status == 503 and refused.headers[b"retry-after"] == b"1"
        body = json.loads(refused.text)
        assert body["error"] == "Service temporarily unavailable"
        assert body["message"] == "Too many concurrent requests" and body["retry_after"] == 1
        probe = Call(app, "GET", "/health")
        await asyncio.wait_for(probe.task, 5)
        assert probe.status == 200
        holder.disconnect.set()
        await asyncio.wait_for(holder.task, 5)


async def test_startup_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAGENTIC_REDIS_POOL_SIZE", "0")
    with pytest.raises(StartupFailed, match=r"^Invalid configuration: FASTAGENTIC_REDIS_POOL_SIZE"):
        async with lifespan(App()):
            pass
    monkeypatch.delenv("FASTAGENTIC_REDIS_POOL_SIZE")
    closed = httpx.URL("redis://127.0.0.1:1/0")
    app = App(settings(redis_url=str(closed), redis_pool_timeout=2.0))
    with pytest.raises(StartupFailed, match=r"^Cannot reach Redis at redis://127.0.0.1:1/0"):
        async with lifespan(app):
            pass


async def test_requests_before_startup_are_503() -> None:
    transport = httpx.ASGITransport(app=App(settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        response = await client.get("/health")
        assert response.status_code == 503 and "lifespan" in response.json()["message"]


# Launcher --------------------------------------------------------------------


def _resolve(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    namespace = launcher.build_parser().parse_args(["run", *argv])
    return launcher.resolve_options(namespace, env)


def test_launcher_precedence_flags_env_defaults() -> None:
    values = _resolve(["--workers", "3"], {"FASTAGENTIC_WORKERS": "8", "FASTAGENTIC_PORT": "9000"})
    assert (values["workers"], values["port"], values["host"]) == (3, 9000, "127.0.0.1")
    assert values["server"] == "supervisor" and values["reload"] is False
    graceful = _resolve([], {"FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN": "45"})
    assert graceful["timeout_graceful"] == 45.0
    with pytest.raises(ConfigError, match="FASTAGENTIC_PORT='x'"):
        _resolve([], {"FASTAGENTIC_PORT": "x"})
    with pytest.raises(ConfigError, match="--server 'hypercorn'"):
        _resolve(["--server", "hypercorn"], {})


def test_launcher_commands_for_each_server() -> None:
    argv = ["--workers", "4", "--port", "8001", "--timeout-graceful", "60"]
    argv += ["--timeout-keep-alive", "75", "--instance-id", "i-1"]
    values = _resolve(argv, {})
    ours = launcher.command({**values, "server": "supervisor"}, launcher.APP)
    assert ours[1:4] == ["-m", "supervisor", "app.main:app"]
    assert _pairs(ours) >= {("--workers", "4"), ("--timeout-graceful", "60"), ("--port", "8001")}
    assert ("--timeout-keep-alive", "75") in _pairs(ours) and ("--instance-id", "i-1") in _pairs(
        ours
    )
    uv = launcher.command({**values, "server": "uvicorn"}, launcher.APP)
    assert uv[1:3] == ["-m", "uvicorn"]
    assert _pairs(uv) >= {("--workers", "4"), ("--timeout-graceful-shutdown", "60")}
    gun = launcher.command({**values, "server": "gunicorn"}, launcher.APP)
    assert ("-k", "uvicorn_worker.UvicornWorker") in _pairs(gun)
    assert _pairs(gun) >= {("--bind", "127.0.0.1:8001"), ("--graceful-timeout", "60")}
    env = launcher.worker_environment(values, {"PATH": "/bin"})
    assert env["FASTAGENTIC_WORKERS"] == "4" and env["FASTAGENTIC_INSTANCE_ID"] == "i-1"
    assert env["FASTAGENTIC_TIMEOUT_KEEP_ALIVE"] == "75" and env["PATH"] == "/bin"
    assert "--forwarded-allow-ips" not in ours  # each server's own default (loopback)


def test_launcher_gives_the_app_and_the_server_one_trust_list() -> None:
    for source in (["--forwarded-allow-ips", "10.0.0.0/8"], []):
        environ = {} if source else {"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
        values = _resolve(source, environ)
        env = launcher.worker_environment(values, environ)
        assert env["FASTAGENTIC_TRUSTED_PROXIES"] == "10.0.0.0/8"
        assert load(env).trusted_proxies == "10.0.0.0/8"
        for server in launcher.SERVERS:
            argv = launcher.command({**values, "server": server}, launcher.APP)
            assert ("--forwarded-allow-ips", "10.0.0.0/8") in _pairs(argv), server


def _pairs(argv: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(argv))


def test_launcher_print_command_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = launcher.main(["run", "--redis-pool-size", "20", "--print-command"], environ={})
    out = capsys.readouterr().out
    assert code == 0 and "FASTAGENTIC_REDIS_POOL_SIZE=20" in out and "-m supervisor" in out
    assert launcher.main(["run", "--db-pool-size", "0"], environ={}) == launcher.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FASTAGENTIC_DB_POOL_SIZE='0'" in err


@pytest.fixture
def no_gunicorn(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "gunicorn" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    yield


def test_launcher_says_when_gunicorn_is_missing(
    no_gunicorn: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launcher.main(["run", "--server", "gunicorn"], environ={}) == launcher.EXIT_MISSING
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gunicorn, which is not installed" in err


def test_settings_struct_round_trips_through_msgspec() -> None:
    s = settings(redis_url="redis://127.0.0.1:6379/0")
    assert msgspec.convert(msgspec.to_builtins(s), Settings) == s


async def test_backend_outages_are_named_and_other_errors_are_not() -> None:
    async def raising(exc: BaseException) -> None:
        raise exc

    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    with pytest.raises(BackendUnavailable) as pg:
        await guard("postgres", raising(starting))
    assert pg.value.check == "postgres"
    assert (
        str(pg.value)
        == "Postgres is unavailable (the database system is starting up); retry shortly."
    )
    with pytest.raises(BackendUnavailable) as rd:
        await guard("redis", raising(RedisConnectionError("Connection refused")))
    assert rd.value.check == "redis"
    with pytest.raises(ValueError):
        await guard("postgres", raising(ValueError("a bug")))
    assert failing_check(asyncpg.exceptions.ConnectionDoesNotExistError("closed")) == "postgres"
    assert failing_check(RuntimeError("bug")) is None


def test_pool_warnings_during_an_outage_are_one_line() -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError:
        record = logging.LogRecord(
            "asyncpg.pool", logging.WARNING, "p", 1, "reconnect failed", (), sys.exc_info()
        )
    OneLineOutages().filter(record)
    assert (
        record.exc_info is None
        and record.getMessage() == "reconnect failed: [Errno 111] Connection refused"
    )


async def test_memory_queue_holds_until_acked_and_knows_only_its_own_messages() -> None:
    queue = MemoryQueue()
    first = await queue.enqueue(TaskMessage("t1", "p", 5))
    second = await queue.enqueue(TaskMessage("t2", "p", 5))
    assert first.startswith(f"{os.getpid()}-")
    [held] = await queue.receive("c", 1, 0.1)
    assert await queue.locate([first, second, "1-1", None]) == [
        (Place.HELD, pytest.approx(0.0, abs=0.5)),
        (Place.WAITING, 0.0),
        (Place.MISSING, 0.0),  # another process's: gone with it, as far as we know
        (Place.MISSING, 0.0),
    ]
    assert await queue.reclaim("c", 10, min_idle=5.0) == []
    await asyncio.sleep(0.05)
    [again] = await queue.reclaim("c", 10, min_idle=0.01)  # its attempt gave up
    assert again.reclaimed and again.task == held.task
    assert await queue.extend("c", held)
    await queue.ack(held)
    assert not await queue.extend("c", held)
    assert (await queue.locate([first]))[0][0] is Place.MISSING
