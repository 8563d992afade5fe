"""Postgres is the record of truth: whatever Redis loses, every accepted task completes.

First one reconcile pass on hand-made states of the real stream (what is
re-queued, what is left alone, two reconcilers at once), then the service in
this process through each way Redis can lose tasks, on a private redis-server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from app.metrics import Metrics
from app.pg_store import PostgresStore
from app.queue import RedisQueue, TaskMessage
from app.reconciler import Reconciler
from app.settings import load
from tests.app.asgi import serve
from tests.app.cluster import backend, start, wait_finished
from tests.app.conftest import DATABASE_URL
from tests.app.private import PrivateRedis, private_redis
from tests.supervisor_process import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.services]


async def _task(
    store: PostgresStore, queue: RedisQueue, label: str, *, queue_it: bool = True
) -> str:
    task_id = f"{label}-{uuid.uuid4().hex[:8]}"
    await store.create(task_id, "tester", f"prompt {label}", 7, None)
    if queue_it:
        await store.queued(task_id, await queue.enqueue(TaskMessage(task_id, "p", 7)))
    return task_id


async def _rows(pool: asyncpg.Pool, name: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch(
        f"SELECT task_id, message_id, now() - touched_at < interval '1 minute' AS fresh"
        f' FROM "{name}".agent_tasks'
    )
    return {row["task_id"].split("-")[0]: row for row in rows}


async def test_one_pass_requeues_exactly_what_redis_lost(
    redis: Redis, pool: asyncpg.Pool, name: str
) -> None:
    queue, store = RedisQueue(redis, name), PostgresStore(pool, name)
    await queue.setup()
    await store.setup()
    await _task(store, queue, "idle")
    [idle] = await queue.receive("gone-consumer", 1, 0.1)  # its worker died long ago
    await asyncio.sleep(1.2)
    await _task(store, queue, "fresh")
    missing = await _task(store, queue, "missing")
    orphan = await _task(store, queue, "orphan")
    done = await _task(store, queue, "done")
    assert await store.finish(done, "answer")
    await _task(store, queue, "unqueued", queue_it=False)
    delivered = {d.task.task_id: d for d in await queue.receive("live-consumer", 10, 0.1)}
    assert len(delivered) == 4
    waiting = await _task(store, queue, "waiting")  # queued after the deliveries
    before = await _rows(pool, name)
    await redis.xdel(queue.stream, before["missing"]["message_id"])  # trimmed away
    await redis.xack(queue.stream, queue.group, delivered[orphan].message_id)  # pending for no one
    await pool.execute(f"UPDATE \"{name}\".agent_tasks SET touched_at = now() - interval '1 hour'")

    reconcilers = [
        Reconciler(store, queue, Metrics(), stale_after=1.0, default_max_tokens=256)
        for _ in range(2)
    ]
    counts = await asyncio.gather(*(r.reconcile() for r in reconcilers))
    assert sum(counts) == 3  # missing, orphan, unqueued: once each, by either reconciler
    assert sum(r.metrics["tasks_requeued"] for r in reconcilers) == 3

    after = await _rows(pool, name)
    for label in ("missing", "orphan", "unqueued"):
        assert after[label]["message_id"] != before[label]["message_id"] and after[label]["fresh"]
    for label in ("waiting", "fresh"):  # seen where they should be: refreshed, not re-queued
        assert after[label]["message_id"] == before[label]["message_id"] and after[label]["fresh"]
    # Idle past the visibility timeout: XAUTOCLAIM's job, left alone; finished: not open.
    assert not after["idle"]["fresh"] and after["idle"]["message_id"] == idle.message_id
    assert not after["done"]["fresh"]

    entries = await redis.xrange(queue.stream)
    labels = sorted(fields["task_id"].split("-")[0] for _id, fields in entries)
    assert labels == sorted(["idle", "waiting", "fresh", "orphan", "unqueued", "missing", "done"])
    assert delivered[orphan].message_id not in {entry_id for entry_id, _ in entries}
    lost = {after[label]["task_id"] for label in ("missing", "orphan", "unqueued")}
    requeued = {d.task.task_id: d.task for d in await queue.receive("live-consumer", 10, 0.1)}
    assert set(requeued) == {waiting} | lost
    assert requeued[missing] == TaskMessage(missing, "prompt missing", 7)
    assert await reconcilers[0].reconcile() == 0  # nothing left to do


async def _mishap(kind: str, server: PrivateRedis, prefix: str) -> None:
    if kind == "restart-empty":
        await asyncio.to_thread(server.restart, 0.5)
        return
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        if kind == "flushall":
            await client.flushall()
        elif kind == "trim":
            await client.xtrim(f"{prefix}:tasks", maxlen=0, approximate=False)
        elif kind == "delete-stream":
            await client.delete(f"{prefix}:tasks")
        elif kind == "destroy-group":
            await client.xgroup_destroy(f"{prefix}:tasks", f"{prefix}:agents")
    finally:
        await client.aclose()


async def _statuses(client: httpx.AsyncClient, ids: list[str]) -> dict[str, Any]:
    bodies = [(await client.get(f"/result/{task_id}")).json() for task_id in ids]
    return {body["task_id"]: body for body in bodies}


@pytest.mark.skipif(not PrivateRedis.available(), reason="needs redis-server")
@pytest.mark.parametrize(
    "kind", ["restart-empty", "flushall", "trim", "delete-stream", "destroy-group"]
)
async def test_every_accepted_task_completes_whatever_redis_loses(
    tmp_path: Path, name: str, kind: str
) -> None:
    with private_redis(tmp_path) as server:
        settings = load(
            {},
            instance_id="reconcile",
            redis_url=server.url,
            database_url=DATABASE_URL,
            redis_prefix=name,
            db_schema=name,
            rate_limit="0",
            task_concurrency=1,
            task_visibility_timeout=1.0,
            llm_fake_tokens=3,
            llm_fake_token_latency=0.05,
            redis_pool_timeout=1.0,
        )
        try:
            async with serve(settings) as (app, client):
                ids = []
                for i in range(16):
                    accepted = await client.post("/agent", json={"prompt": f"{kind} {i}"})
                    assert accepted.status_code == 202, accepted.text
                    ids.append(accepted.json()["task_id"])
                while (
                    sum(b["status"] == "done" for b in (await _statuses(client, ids)).values()) < 3
                ):
                    await asyncio.sleep(0.05)
                await _mishap(kind, server, name)
                deadline = time.monotonic() + 40
                while True:
                    results = await _statuses(client, ids)
                    if all(body["status"] == "done" for body in results.values()):
                        break
                    assert time.monotonic() < deadline, {
                        i: (b["status"], b["attempts"]) for i, b in results.items()
                    }
                    await asyncio.sleep(0.1)
                assert app.service is not None
                metrics = app.service.metrics
                if kind != "destroy-group":  # a recreated group redelivers the stream itself
                    assert metrics["tasks_requeued"] >= 1
                assert all(body["attempts"] <= 3 for body in results.values())
        finally:
            pool = await asyncpg.connect(DATABASE_URL)
            try:
                await pool.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await pool.close()


def test_without_redis_a_killed_workers_tasks_complete_in_a_sibling(tmp_path: Path) -> None:
    """Postgres and in-process queues: what the killed worker had accepted (running or
    still in its memory) is queued again by a sibling's reconciler."""
    with backend() as slice_:
        env = {
            **slice_.env,
            "FASTAGENTIC_REDIS_URL": "",
            "FASTAGENTIC_RATE_LIMIT": "0",
            "FASTAGENTIC_TASK_VISIBILITY_TIMEOUT": "2",
            "FASTAGENTIC_TASK_CONCURRENCY": "2",
            "FASTAGENTIC_LLM_FAKE_TOKENS": "10",
            "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.1",
        }
        process = start(tmp_path, "--workers", "2", env=env)
        try:
            process.wait_serving(2, timeout=15)
            ids = [
                httpx.post(f"{process.url}/agent", json={"prompt": f"m{i}"}, timeout=5).json()[
                    "task_id"
                ]
                for i in range(12)
            ]

            def holder() -> int | None:
                rows = slice_.query(
                    "SELECT worker FROM {schema}.agent_tasks WHERE status = 'running'"
                )
                return int(rows[0]["worker"].rsplit("-", 1)[1]) if rows else None

            victim = wait_for(holder, 10, message="a task running")
            os.kill(victim, signal.SIGKILL)
            results = [wait_finished(process.url, task_id, timeout=40) for task_id in ids]
        finally:
            process.stop()
        assert {r["status"] for r in results} == {"done"}
        assert "Re-queued" in process.log()
