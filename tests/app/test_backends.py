"""The Redis and Postgres backends on the real services, without processes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from redis.asyncio import Redis

from app.pg_store import PostgresStore
from app.queue import RedisQueue, TaskMessage
from app.ratelimit import RedisRateLimiter
from app.store import RedisStore, TaskStore

pytestmark = [pytest.mark.anyio, pytest.mark.services]


async def test_redis_queue_reclaims_what_a_dead_consumer_held(redis: Redis, name: str) -> None:
    queue = RedisQueue(redis, name)
    await queue.setup()
    await queue.setup()  # idempotent (BUSYGROUP)
    await queue.enqueue(TaskMessage("t1", "prompt", 5))
    [held] = await queue.receive("dead", 10, 0.1)
    assert held.task == TaskMessage("t1", "prompt", 5) and not held.reclaimed
    assert await queue.receive("alive", 10, 0.05) == []
    assert await queue.reclaim("alive", 10, min_idle=5.0) == []  # not idle long enough
    await asyncio.sleep(0.25)
    [taken] = await queue.reclaim("alive", 10, min_idle=0.2)
    assert taken.task.task_id == "t1" and taken.reclaimed
    assert (await queue.stats())["queue_pending"] == 1
    await queue.ack(taken)
    assert await queue.stats() == {"queue_length": 0.0, "queue_pending": 0.0}


async def test_redis_queue_extend_keeps_a_live_task(redis: Redis, name: str) -> None:
    queue = RedisQueue(redis, name)
    await queue.setup()
    await queue.enqueue(TaskMessage("t2", "p", 5))
    [held] = await queue.receive("busy", 1, 0.1)
    await asyncio.sleep(0.25)
    await queue.extend("busy", held)
    assert await queue.reclaim("other", 10, min_idle=0.2) == []


async def _exercise_store(store: TaskStore) -> None:
    await store.setup()
    await store.setup()  # every start migrates: must be idempotent
    task_id, created = await store.create("a1", "alice", "hello", 5, "key-1")
    assert (task_id, created) == ("a1", True)
    assert await store.create("a2", "alice", "hello", 5, "key-1") == ("a1", False)
    assert await store.create("b1", "bob", "hello", 5, "key-1") == ("b1", True)
    assert await store.create("n1", "alice", "hello", 5, None) == ("n1", True)
    assert await store.create("n2", "alice", "hello", 5, None) == ("n2", True)
    record = await store.get("a1")
    assert record is not None and record.status == "pending" and record.attempts == 0
    assert await store.start_attempt("a1", "w-1") == 1
    assert await store.start_attempt("a1", "w-2") == 2
    await store.touch("a1", "w-2")
    assert await store.finish("a1", "the answer")
    assert await store.start_attempt("a1", "w-3") is None  # done: a redelivery is a no-op
    assert not await store.finish("a1", "a second run's answer")  # the first outcome wins
    assert not await store.fail("a1", "a late failure")
    done = await store.get("a1")
    assert done is not None and done.public()["result"] == "the answer" and done.worker == "w-2"
    assert await store.fail("b1", "it broke")
    failed = await store.get("b1")
    assert failed is not None and failed.public()["error"] == "it broke"
    # A task that could not be queued is withdrawn, so its key can be used again...
    assert await store.create("w1", "carol", "p", 5, "key-w") == ("w1", True)
    await store.withdraw("w1")
    assert await store.get("w1") is None
    assert await store.create("w2", "carol", "p", 5, "key-w") == ("w2", True)
    # ...but never once an attempt started.
    assert await store.start_attempt("w2", "w-1") == 1
    await store.withdraw("w2")
    assert await store.get("w2") is not None
    assert await store.get("missing") is None
    assert await store.start_attempt("missing", "w") is None


async def test_postgres_store(pool: asyncpg.Pool, name: str) -> None:
    await _exercise_store(PostgresStore(pool, name))
    columns = await pool.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1", name
    )
    assert columns == 14


async def test_postgres_migrations_run_concurrently(pool: asyncpg.Pool, name: str) -> None:
    stores = [PostgresStore(pool, name) for _ in range(4)]
    await asyncio.gather(*(store.setup() for store in stores))
    assert await pool.fetchval(f'SELECT count(*) FROM "{name}".agent_tasks') == 0


async def test_redis_store(redis: Redis, name: str) -> None:
    await _exercise_store(RedisStore(redis, name, ttl=60))
    assert 0 < await redis.ttl(f"{name}:task:a1") <= 60


async def test_redis_rate_limit_is_shared_and_expires(redis: Redis, name: str) -> None:
    first = RedisRateLimiter(redis, name, limit=2, window=1)
    second = RedisRateLimiter(redis, name, limit=2, window=1)  # another worker
    decisions = [await first.hit("u"), await second.hit("u"), await first.hit("u")]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].reset == 1 and decisions[2].remaining == 0
    await asyncio.sleep(1.1)
    assert (await second.hit("u")).allowed
