"""Fixtures of the app's tests: a slice of the shared Redis and Postgres for each test.

Every test gets its own key prefix and schema (``name``), removed at teardown,
so tests running at the same time on the shared services never meet.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(name: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def pool(name: str) -> AsyncIterator[asyncpg.Pool]:
    pg = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=4)
    try:
        yield pg
    finally:
        await pg.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await pg.close()
