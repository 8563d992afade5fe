"""The service under the real supervisor on a slice of the shared Redis and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

from tests.app.conftest import DATABASE_URL, REDIS_URL
from tests.supervisor_process import SupervisorProcess, wait_for

APP = "app.main:app"


@dataclass
class Backend:
    """One test's slice of the shared services."""

    name: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "FASTAGENTIC_REDIS_URL": REDIS_URL,
            "FASTAGENTIC_DATABASE_URL": DATABASE_URL,
            "FASTAGENTIC_REDIS_PREFIX": self.name,
            "FASTAGENTIC_DB_SCHEMA": self.name,
            "FASTAGENTIC_CLIENT_NAME": self.name,
            "FASTAGENTIC_INSTANCE_ID": "e2e",
        }

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(DATABASE_URL)
            try:
                return list(await conn.fetch(sql.replace("{schema}", f'"{self.name}"'), *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def cleanup(self) -> None:
        self.query("DROP SCHEMA IF EXISTS {schema} CASCADE")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{self.name}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@contextlib.contextmanager
def backend() -> Iterator[Backend]:
    slice_ = Backend(f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield slice_
    finally:
        slice_.cleanup()


def start(tmp: Path, *args: str, env: dict[str, str]) -> SupervisorProcess:
    return SupervisorProcess(tmp, [APP, *args], env=env)


def task_status(url: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/result/{task_id}", timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_finished(url: str, task_id: str, timeout: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = task_status(url, task_id)
        return body if body["status"] in ("done", "failed") else None

    return wait_for(finished, timeout, interval=0.05, message=f"task {task_id} finished")
