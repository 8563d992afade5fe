"""Task records in Postgres: the record of truth for every accepted task.

The ``agent_tasks`` table holds each task from the moment its POST is
answered 202 until it is done or failed, with the last sign of life of an open
task (``touched_at``). ``stale`` hands the reconciler the open tasks that
showed none for a while, so a task lost by Redis is queued again from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

import msgspec

from app.outage import POSTGRES_DOWN, SOCKET_DOWN
from app.store import TaskRecord

MIGRATION_LOCK = 0x46_41_47  # pg_advisory_xact_lock key: one migrating worker at a time
_PG_DOWN = POSTGRES_DOWN + SOCKET_DOWN


class StaleTask(msgspec.Struct, frozen=True):
    """An open task that showed no sign of life for a while (see ``PostgresStore.stale``)."""

    task_id: str
    prompt: str
    status: str
    max_tokens: int | None = None
    message_id: str | None = None


class PostgresStore:
    """The ``agent_tasks`` table in FASTAGENTIC_DB_SCHEMA, through an asyncpg pool.

    When a call finds Postgres gone (restart, failover), every pooled
    connection is expired, so the pool reconnects on the next acquire instead
    of failing once per dead connection after Postgres is back.
    """

    kind = "postgres"

    def __init__(self, pool: Any, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        table = f'"{schema}".agent_tasks'
        open_ = "status IN ('pending', 'running')"
        self.sql = {
            "insert": f"INSERT INTO {table}"
            " (task_id, user_id, idempotency_key, prompt, max_tokens)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, idempotency_key)"
            " WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING task_id",
            "by_key": f"SELECT task_id FROM {table} WHERE user_id = $1 AND idempotency_key = $2",
            "queued": f"UPDATE {table} SET message_id = $2, touched_at = now()"
            f" WHERE task_id = $1 AND {open_}",
            "withdraw": f"DELETE FROM {table}"
            " WHERE task_id = $1 AND status = 'pending' AND attempts = 0",
            "get": "SELECT task_id, user_id, status, result, error, attempts, worker,"
            " extract(epoch FROM created_at)::float8 AS created_at,"
            f" extract(epoch FROM updated_at)::float8 AS updated_at FROM {table}"
            " WHERE task_id = $1",
            "start": f"UPDATE {table} SET status = 'running', attempts = attempts + 1,"
            " worker = $2, updated_at = now(), touched_at = now()"
            f" WHERE task_id = $1 AND {open_} RETURNING attempts",
            "touch": f"UPDATE {table} SET touched_at = now()"
            " WHERE task_id = $1 AND status = 'running'",
            "finish": f"UPDATE {table} SET status = 'done', result = $2, error = NULL,"
            f" updated_at = now() WHERE task_id = $1 AND {open_}",
            "fail": f"UPDATE {table} SET status = 'failed', error = $2, updated_at = now()"
            f" WHERE task_id = $1 AND {open_}",
            "stale": f"SELECT task_id, prompt, status, max_tokens, message_id FROM {table}"
            f" WHERE {open_} AND touched_at < now() - make_interval(secs => $1)"
            " ORDER BY touched_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            "seen": f"UPDATE {table} SET touched_at = now(),"
            " message_id = COALESCE($2, message_id) WHERE task_id = $1",
        }

    async def setup(self) -> None:
        """Create or upgrade the schema; concurrent workers serialise on an advisory lock."""
        script = resources.files("app").joinpath("schema.sql").read_text()
        script = script.replace("{schema}", self.schema)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(script)

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.pool, method)(*args)
        except _PG_DOWN:
            await self.expire()
            raise

    async def expire(self) -> None:
        """Replace every pooled connection on its next use (Postgres restarted)."""
        with contextlib.suppress(Exception):
            await self.pool.expire_connections()

    async def create(
        self,
        task_id: str,
        user_id: str,
        prompt: str,
        max_tokens: int,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        try:
            async with self.pool.acquire() as conn:
                created = await conn.fetchval(
                    self.sql["insert"], task_id, user_id, idempotency_key, prompt, max_tokens
                )
                if created is not None:
                    return str(created), True
                existing = await conn.fetchval(self.sql["by_key"], user_id, idempotency_key)
                return str(existing), False
        except _PG_DOWN:
            await self.expire()
            raise

    async def queued(self, task_id: str, message_id: str) -> None:
        await self._call("execute", self.sql["queued"], task_id, message_id)

    async def withdraw(self, task_id: str) -> None:
        await self._call("execute", self.sql["withdraw"], task_id)

    async def get(self, task_id: str) -> TaskRecord | None:
        row = await self._call("fetchrow", self.sql["get"], task_id)
        return None if row is None else msgspec.convert(dict(row), TaskRecord)

    async def start_attempt(self, task_id: str, worker: str) -> int | None:
        attempts = await self._call("fetchval", self.sql["start"], task_id, worker)
        return None if attempts is None else int(attempts)

    async def touch(self, task_id: str, worker: str) -> None:
        await self._call("execute", self.sql["touch"], task_id)

    async def finish(self, task_id: str, result: str) -> bool:
        return _changed(await self._call("execute", self.sql["finish"], task_id, result))

    async def fail(self, task_id: str, error: str) -> bool:
        return _changed(await self._call("execute", self.sql["fail"], task_id, error))

    @contextlib.asynccontextmanager
    async def stale(self, idle: float, limit: int) -> AsyncIterator[StaleBatch]:
        """Up to ``limit`` open tasks untouched for ``idle`` seconds, locked until the block ends.

        SKIP LOCKED lets every worker reconcile at once without a leader: each
        gets other rows, and a row it marks seen is fresh for everyone after."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self.sql["stale"], float(idle), limit)
                tasks = [msgspec.convert(dict(row), StaleTask) for row in rows]
                yield StaleBatch(conn, self.sql["seen"], tasks)
        except _PG_DOWN:
            await self.expire()
            raise


class StaleBatch:
    """The locked rows of one reconcile pass; ``seen`` refreshes them (and their message id)."""

    def __init__(self, conn: Any, sql: str, tasks: list[StaleTask]) -> None:
        self.conn = conn
        self.sql = sql
        self.tasks = tasks

    async def seen(self, updates: Sequence[tuple[str, str | None]]) -> None:
        if updates:
            await self.conn.executemany(self.sql, updates)


def _changed(status: str) -> bool:
    return not status.endswith(" 0")
