"""Task records: Postgres (asyncpg), Redis hashes, or this process's memory.

Every backend answers the same questions: create a task (or find the one an
Idempotency-Key already made), note where it was queued, start an attempt,
finish, fail, read. ``start_attempt`` is the at-least-once guard: it refuses a
task that is already done or failed, so a redelivered message never runs twice
to the end, and ``finish``/``fail`` only change an open task (the first outcome
wins when a task ran twice). The Postgres store (``app.pg_store``) is the
record of truth the reconciler works from.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Literal, Protocol, TypeAlias

import msgspec
from redis.asyncio import Redis

Status = Literal["pending", "running", "done", "failed"]
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
        self,
        task_id: str,
        user_id: str,
        prompt: str,
        max_tokens: int,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        """(task id, created); an existing key for the same user returns its task, False."""
        ...

    async def queued(self, task_id: str, message_id: str) -> None:
        """Remember where the task was queued (the reconciler checks it is still there)."""
        ...

    async def withdraw(self, task_id: str) -> None:
        """Forget a task that could not be queued (its POST answers 503), if never started."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        """Mark running and count the attempt; None if the task is finished or unknown."""
        ...

    async def touch(self, task_id: str, worker: str) -> None:
        """A running attempt's heartbeat."""
        ...

    async def finish(self, task_id: str, result: str) -> bool:
        """Store the result of an open task; False when it was already finished."""
        ...

    async def fail(self, task_id: str, error: str) -> bool: ...


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
        self,
        task_id: str,
        user_id: str,
        prompt: str,
        max_tokens: int,
        idempotency_key: str | None,
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

    async def queued(self, task_id: str, message_id: str) -> None:
        return None

    async def withdraw(self, task_id: str) -> None:
        record = self.records.get(task_id)
        if record is not None and record.status == "pending" and record.attempts == 0:
            del self.records[task_id]

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    async def touch(self, task_id: str, worker: str) -> None:
        return None

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        record = self.records.get(task_id)
        if record is None or record.status in ("done", "failed"):
            return None
        record.status, record.worker, record.updated_at = "running", worker, time.time()
        record.attempts += 1
        return record.attempts

    async def finish(self, task_id: str, result: str) -> bool:
        record = self.records.get(task_id)
        if record is None or record.status in ("done", "failed"):
            return False
        record.status, record.result, record.updated_at = "done", result, time.time()
        return True

    async def fail(self, task_id: str, error: str) -> bool:
        record = self.records.get(task_id)
        if record is None or record.status in ("done", "failed"):
            return False
        record.status, record.error, record.updated_at = "failed", error, time.time()
        return True


_CREATE = """
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('EXISTS', KEYS[3] .. existing) == 1 then
    return {existing, 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'user_id', ARGV[2], 'prompt', ARGV[3],
  'status', 'pending', 'attempts', 0, 'created_at', ARGV[6], 'updated_at', ARGV[6],
  'max_tokens', ARGV[7])
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
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
_WITHDRAW = """
if redis.call('HGET', KEYS[1], 'status') == 'pending'
   and redis.call('HGET', KEYS[1], 'attempts') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0
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
        self._withdraw = redis.register_script(_WITHDRAW)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    async def setup(self) -> None:
        return None

    async def create(
        self,
        task_id: str,
        user_id: str,
        prompt: str,
        max_tokens: int,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        # Hashed: user ids hold ':' (IPv6, "key:NAME"), and NUL is refused in both parts.
        scope = hashlib.sha256(f"{user_id}\0{idempotency_key or ''}".encode()).hexdigest()
        flag = "1" if idempotency_key is not None else "0"
        keys = [self._key(task_id), f"{self.prefix}:idem:{scope}", f"{self.prefix}:task:"]
        args: list[ScriptArg] = [task_id, user_id, prompt, self.ttl, flag, time.time(), max_tokens]
        found, created = await self._create(keys=keys, args=args)
        return str(found), bool(int(created))

    async def queued(self, task_id: str, message_id: str) -> None:
        return None

    async def withdraw(self, task_id: str) -> None:
        await self._withdraw(keys=[self._key(task_id)], args=[])

    async def get(self, task_id: str) -> TaskRecord | None:
        fields = await self.redis.hgetall(self._key(task_id))
        if not fields:
            return None
        fields.pop("prompt", None)
        fields.pop("max_tokens", None)
        return msgspec.convert(fields, TaskRecord, strict=False)

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        attempts = int(await self._start(keys=[self._key(task_id)], args=[worker, time.time()]))
        return None if attempts < 0 else attempts

    async def touch(self, task_id: str, worker: str) -> None:
        return None

    async def finish(self, task_id: str, result: str) -> bool:
        args: list[ScriptArg] = ["status", "done", "result", result, "updated_at", time.time()]
        return bool(await self._update(keys=[self._key(task_id)], args=args))

    async def fail(self, task_id: str, error: str) -> bool:
        args: list[ScriptArg] = ["status", "failed", "error", error, "updated_at", time.time()]
        return bool(await self._update(keys=[self._key(task_id)], args=args))
