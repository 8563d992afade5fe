"""No claim outlives its attempt: the keep-claim loop ends on every path, even with faults.

A consumer runs in this process against the real Redis and Postgres. Its
queue renews claims through ``LossyQueue``: a real RedisQueue whose renewal
is slow and turns a cancellation into a ConnectionError, as redis-py can
while it cleans up a connection (the failure that once kept a failed task's
message claimed forever). Postgres is cut mid-attempt with a private cluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.consumer import Claim, Consumer
from app.errors import LLMError
from app.llm import FakeLLM
from app.metrics import Metrics
from app.pg_store import PostgresStore
from app.queue import Delivery, RedisQueue, TaskMessage
from tests.app.private import PrivatePostgres, private_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.services]

VISIBILITY = 0.6  # renewals every 0.2 s


class LossyQueue(RedisQueue):
    """Renewals take a while, and a cancellation arriving meanwhile is lost."""

    renew_seconds = 0.1

    async def extend(self, consumer: str, delivery: Delivery) -> bool:
        try:
            await asyncio.sleep(self.renew_seconds)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed while cancelling") from None
        return await super().extend(consumer, delivery)


class LateFailingLLM(FakeLLM):
    """The fake model, except that ``late-fail:`` prompts fail after all their tokens."""

    async def complete(self, prompt: str, max_tokens: int) -> str:
        answer = await super().complete(prompt, max_tokens)
        if prompt.startswith("late-fail:"):
            raise LLMError("the model broke off at the end")
        return answer


def consumer_for(
    queue: RedisQueue, store: PostgresStore, *, tokens: int, timeout: float = 30.0
) -> Consumer:
    return Consumer(
        queue,
        store,
        LateFailingLLM(tokens, 0.1),
        Metrics(),
        name=f"c-{uuid.uuid4().hex[:6]}",
        concurrency=1,
        visibility_timeout=VISIBILITY,
        max_attempts=1,
        retry_backoff=0.0,
        max_tokens=256,
        attempt_timeout=timeout,
    )


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


def keep_claim_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("keep-claim")]


async def submit(store: PostgresStore, queue: RedisQueue, prompt: str) -> tuple[str, str]:
    task_id = uuid.uuid4().hex
    await store.create(task_id, "tester", prompt, 256, None)
    message_id = await queue.enqueue(TaskMessage(task_id, prompt, 256))
    await store.queued(task_id, message_id)
    return task_id, message_id


async def pending_entry(redis: Redis, queue: RedisQueue, message_id: str) -> dict[str, Any] | None:
    entries = await redis.xpending_range(queue.stream, queue.group, message_id, message_id, 1)
    return entries[0] if entries else None


@pytest.fixture
async def backends(
    redis: Redis, pool: asyncpg.Pool, name: str
) -> AsyncIterator[tuple[LossyQueue, PostgresStore]]:
    queue = LossyQueue(redis, name)
    store = PostgresStore(pool, name)
    await queue.setup()
    await store.setup()
    yield queue, store


async def running_claim(consumer: Consumer) -> Claim:
    async def one() -> Claim | None:
        return next(iter(consumer.claims), None)

    return await until(one, 10, "the attempt to start")  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["done", "failed", "timeout", "cancelled"])
async def test_the_claim_ends_with_the_attempt_on_every_path(
    backends: tuple[LossyQueue, PostgresStore], redis: Redis, path: str
) -> None:
    queue, store = backends
    prompt = f"late-fail: {uuid.uuid4().hex}" if path == "failed" else f"{path} {uuid.uuid4().hex}"
    # Two seconds of work (one for the timeout): several renewals fit even when the suite's
    # other process loads the machine and a renewal misses its 0.2 s window.
    consumer = consumer_for(queue, store, tokens=20, timeout=1.0 if path == "timeout" else 30)
    task_id, message_id = await submit(store, queue, prompt)
    consumer.start()
    try:
        claim = await running_claim(consumer)
        await until(lambda: _true(claim.renewals >= 1), 5, "a renewal")
        if path == "cancelled":
            await consumer.stop(timeout=0)  # shutdown: running attempts are cancelled
        else:
            await until(lambda: _finished(store, task_id), 10, "the outcome")
        await until(lambda: _true(not consumer.claims and not keep_claim_tasks()), 3, "no claim")
        record = await store.get(task_id)
        assert record is not None
        expected = {"done": "done", "failed": "failed", "timeout": "failed"}.get(path, "running")
        assert record.status == expected, record
        if path == "timeout":
            assert "timed out after 1s" in (record.error or "")
        entry = await pending_entry(redis, queue, message_id)
        if path != "cancelled":
            assert entry is None  # acknowledged with its outcome
        else:
            # Left for another worker, and nobody renews it any more: it goes idle.
            assert entry is not None
            await asyncio.sleep(VISIBILITY)
            later = await pending_entry(redis, queue, message_id)
            assert later is not None and later["time_since_delivered"] >= VISIBILITY * 1000
    finally:
        await consumer.stop(timeout=0)


async def _true(value: bool) -> bool:
    return value


async def _finished(store: PostgresStore, task_id: str) -> bool:
    record = await store.get(task_id)
    return record is not None and record.status in ("done", "failed")


@pytest.mark.skipif(not PrivatePostgres.available(), reason="needs Postgres server binaries")
async def test_a_postgres_outage_mid_attempt_releases_the_claim(redis: Redis, name: str) -> None:
    """The attempt cannot store its result: its claim ends, the message goes idle, and
    it is reclaimed (here while Postgres is still down); when Postgres is back the
    task completes. A claim renewed past its attempt would block the reclaim forever."""
    with private_postgres() as server:
        pg = await asyncpg.create_pool(server.url, min_size=1, max_size=4, timeout=2)
        try:
            await _outage_mid_attempt(server, LossyQueue(redis, name), PostgresStore(pg, name))
        finally:
            pg.terminate()


async def _outage_mid_attempt(
    server: PrivatePostgres, queue: LossyQueue, store: PostgresStore
) -> None:
    await queue.setup()
    await store.setup()
    consumer = consumer_for(queue, store, tokens=10)  # one second of work
    consumer.max_attempts = 5
    task_id, message_id = await submit(store, queue, f"outage {uuid.uuid4().hex}")
    consumer.start()
    try:
        first = await running_claim(consumer)
        await until(lambda: _true(first.renewals >= 1), 5, "a renewal")
        await asyncio.to_thread(server.stop)
        # The store is retried for the visibility timeout, then the attempt gives up.
        await until(lambda: _true(first.over.is_set()), 10, "the attempt to give up")
        # The claim leaves the set in its renewal task's done-callback, a loop turn later.
        await until(lambda: _true(first not in consumer.claims), 3, "the claim to end")
        assert first.renewals < 10
        redelivered = await until(
            lambda: _redelivered(queue, message_id), 10, "the message to be reclaimed"
        )
        assert redelivered["times_delivered"] >= 2
        await asyncio.to_thread(server.start)
        await until(lambda: _finished(store, task_id), 20, "the task to complete")
        record = await store.get(task_id)
        assert record is not None and record.status == "done" and record.attempts >= 2
        assert consumer.metrics["tasks_reclaimed"] >= 1
        await until(lambda: _true(not consumer.claims), 3, "no claim left")
    finally:
        await consumer.stop(timeout=0)


async def _redelivered(queue: RedisQueue, message_id: str) -> dict[str, Any] | None:
    entry = await pending_entry(queue.redis, queue, message_id)
    return entry if entry and entry["times_delivered"] >= 2 else None
