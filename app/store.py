"""Task records: Postgres (asyncpg), Redis hashes, or this process's memory.

Every backend answers the same five questions: create a task (or find the one
an Idempotency-Key already made), start an attempt, finish, fail, read.
``start_attempt`` is the at-least-once guard: it refuses a task that is
already done or failed, so a redelivered message never runs twice to the end.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from importlib import resources
from typing import Any, Literal, Protocol, TypeAlias

import msgspec
from redis.asyncio import Redis

Status = Literal["pending", "running", "done", "failed"]
MIGRATION_LOCK = 0x46_41_47  # pg_advisory_xact_lock key: one migrating worker at a time
MEMORY_CAPACITY = 10_000
ScriptArg: TypeAlias = str | int | float


class TaskRecord(msgspec.Struct, kw_only=True):
    task_id: str
    user_id: str
    status: Status = "pending"
    result: str | None = None
    error: str | None = None
    attempts: int = 0
    worker: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def public(self) -> dict[str, Any]:
        """The body of GET /result/{id}."""
        body: dict[str, Any] = {"task_id": self.task_id, "status": self.status}
        if self.status == "done":
            body["result"] = self.result
        elif self.status == "failed":
            body["error"] = self.error
        body.update(attempts=self.attempts, created_at=self.created_at, updated_at=self.updated_at)
        return body


class TaskStore(Protocol):
    kind: str

    async def setup(self) -> None: ...

    async def create(
        self, task_id: str, user_id: str, prompt: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        """(task id, created); an existing key for the same user returns its task, False."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        """Mark running and count the attempt; None if the task is finished or unknown."""
        ...

    async def finish(self, task_id: str, result: str) -> None: ...

    async def fail(self, task_id: str, error: str) -> None: ...


class MemoryStore:
    """This process's records, the oldest forgotten past ``MEMORY_CAPACITY``."""

    kind = "memory"

    def __init__(self, capacity: int = MEMORY_CAPACITY) -> None:
        self.capacity = capacity
        self.records: OrderedDict[str, TaskRecord] = OrderedDict()
        self.keys: dict[tuple[str, str], str] = {}

    async def setup(self) -> None:
        return None

    async def create(
        self, task_id: str, user_id: str, prompt: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        if idempotency_key is not None:
            existing = self.keys.get((user_id, idempotency_key))
            if existing is not None and existing in self.records:
                return existing, False
            self.keys[(user_id, idempotency_key)] = task_id
        now = time.time()
        self.records[task_id] = TaskRecord(
            task_id=task_id, user_id=user_id, created_at=now, updated_at=now
        )
        while len(self.records) > self.capacity:
            self.records.popitem(last=False)
        return task_id, True

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        record = self.records.get(task_id)
        if record is None or record.status in ("done", "failed"):
            return None
        record.status, record.worker, record.updated_at = "running", worker, time.time()
        record.attempts += 1
        return record.attempts

    async def finish(self, task_id: str, result: str) -> None:
        if (record := self.records.get(task_id)) is not None:
            record.status, record.result, record.updated_at = "done", result, time.time()

    async def fail(self, task_id: str, error: str) -> None:
        if (record := self.records.get(task_id)) is not None:
            record.status, record.error, record.updated_at = "failed", error, time.time()


class PostgresStore:
    """The ``agent_tasks`` table in FASTAGENTIC_DB_SCHEMA, through an asyncpg pool."""

    kind = "postgres"

    def __init__(self, pool: Any, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        table = f'"{schema}".agent_tasks'
        self.sql = {
            "insert": f"INSERT INTO {table} (task_id, user_id, idempotency_key, prompt)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, idempotency_key)"
            " WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING task_id",
            "by_key": f"SELECT task_id FROM {table} WHERE user_id = $1 AND idempotency_key = $2",
            "get": "SELECT task_id, user_id, status, result, error, attempts, worker,"
            " extract(epoch FROM created_at)::float8 AS created_at,"
            f" extract(epoch FROM updated_at)::float8 AS updated_at FROM {table}"
            " WHERE task_id = $1",
            "start": f"UPDATE {table} SET status = 'running', attempts = attempts + 1,"
            " worker = $2, updated_at = now()"
            " WHERE task_id = $1 AND status IN ('pending', 'running') RETURNING attempts",
            "finish": f"UPDATE {table} SET status = 'done', result = $2, error = NULL,"
            " updated_at = now() WHERE task_id = $1",
            "fail": f"UPDATE {table} SET status = 'failed', error = $2, updated_at = now()"
            " WHERE task_id = $1 AND status <> 'done'",
        }

    async def setup(self) -> None:
        """Create or upgrade the schema; concurrent workers serialise on an advisory lock."""
        script = resources.files("app").joinpath("schema.sql").read_text()
        script = script.replace("{schema}", self.schema)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(script)

    async def create(
        self, task_id: str, user_id: str, prompt: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        async with self.pool.acquire() as conn:
            created = await conn.fetchval(
                self.sql["insert"], task_id, user_id, idempotency_key, prompt
            )
            if created is not None:
                return str(created), True
            existing = await conn.fetchval(self.sql["by_key"], user_id, idempotency_key)
            return str(existing), False

    async def get(self, task_id: str) -> TaskRecord | None:
        row = await self.pool.fetchrow(self.sql["get"], task_id)
        return None if row is None else msgspec.convert(dict(row), TaskRecord)

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        attempts = await self.pool.fetchval(self.sql["start"], task_id, worker)
        return None if attempts is None else int(attempts)

    async def finish(self, task_id: str, result: str) -> None:
        await self.pool.execute(self.sql["finish"], task_id, result)

    async def fail(self, task_id: str, error: str) -> None:
        await self.pool.execute(self.sql["fail"], task_id, error)


_CREATE = """
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('EXISTS', KEYS[3] .. existing) == 1 then
    return {existing, 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'user_id', ARGV[2], 'prompt', ARGV[3],
  'status', 'pending', 'attempts', 0, 'created_at', ARGV[6], 'updated_at', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {ARGV[1], 1}
"""
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'running' then return -1 end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'updated_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class RedisStore:
    """Hashes ``<prefix>:task:<id>`` expiring after FASTAGENTIC_RESULT_TTL (no Postgres)."""

    kind = "redis"

    def __init__(self, redis: Redis, prefix: str, ttl: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._create = redis.register_script(_CREATE)
        self._start = redis.register_script(_START)
        self._update = redis.register_script(_UPDATE)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    async def setup(self) -> None:
        return None

    async def create(
        self, task_id: str, user_id: str, prompt: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        idem_key = f"{self.prefix}:idem:{user_id}:{idempotency_key or ''}"
        flag = "1" if idempotency_key is not None else "0"
        keys = [self._key(task_id), idem_key, f"{self.prefix}:task:"]
        args: list[ScriptArg] = [task_id, user_id, prompt, self.ttl, flag, time.time()]
        found, created = await self._create(keys=keys, args=args)
        return str(found), bool(int(created))

    async def get(self, task_id: str) -> TaskRecord | None:
        fields = await self.redis.hgetall(self._key(task_id))
        if not fields:
            return None
        fields.pop("prompt", None)
        return msgspec.convert(fields, TaskRecord, strict=False)

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        attempts = int(await self._start(keys=[self._key(task_id)], args=[worker, time.time()]))
        return None if attempts < 0 else attempts

    async def finish(self, task_id: str, result: str) -> None:
        args: list[ScriptArg] = ["status", "done", "result", result, "updated_at", time.time()]
        await self._update(keys=[self._key(task_id)], args=args)

    async def fail(self, task_id: str, error: str) -> None:
        args: list[ScriptArg] = ["status", "failed", "error", error, "updated_at", time.time()]
        await self._update(keys=[self._key(task_id)], args=args)
