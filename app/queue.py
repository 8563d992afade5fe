"""The task queue: a Redis Stream with a consumer group, or an in-process queue.

Redis gives at-least-once delivery across workers and hosts: a message stays
pending for its consumer until acknowledged; one whose consumer stopped
answering (killed worker, lost host) is idle past the visibility timeout and
taken over by another consumer with XAUTOCLAIM. A consumer still working on a
message resets its idle time (``extend``) so long tasks are not stolen.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

logger = logging.getLogger("app.queue")


class TaskMessage(msgspec.Struct, frozen=True):
    task_id: str
    prompt: str
    max_tokens: int


class Delivery(msgspec.Struct, frozen=True):
    """One message handed to a consumer; ``message_id`` is the backend's receipt."""

    message_id: str
    task: TaskMessage
    reclaimed: bool = False


class TaskQueue(Protocol):
    kind: str

    async def setup(self) -> None: ...

    async def enqueue(self, task: TaskMessage) -> None: ...

    async def receive(self, consumer: str, count: int, block: float) -> list[Delivery]:
        """Up to ``count`` new messages, waiting up to ``block`` seconds for the first."""
        ...

    async def reclaim(self, consumer: str, count: int, min_idle: float) -> list[Delivery]:
        """Messages other consumers left pending for longer than ``min_idle`` seconds."""
        ...

    async def extend(self, consumer: str, delivery: Delivery) -> None:
        """Tell the backend the message is still being worked on."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def stats(self) -> dict[str, float]: ...


class MemoryQueue:
    """One process's queue: tasks are consumed by the worker that accepted them."""

    kind = "memory"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[TaskMessage] = asyncio.Queue()
        self._counter = 0

    async def setup(self) -> None:
        return None

    async def enqueue(self, task: TaskMessage) -> None:
        self._queue.put_nowait(task)

    async def receive(self, consumer: str, count: int, block: float) -> list[Delivery]:
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=block)
        except TimeoutError:
            return []
        tasks = [first]
        while len(tasks) < count and not self._queue.empty():
            tasks.append(self._queue.get_nowait())
        deliveries = []
        for task in tasks:
            self._counter += 1
            deliveries.append(Delivery(str(self._counter), task))
        return deliveries

    async def reclaim(self, consumer: str, count: int, min_idle: float) -> list[Delivery]:
        return []

    async def extend(self, consumer: str, delivery: Delivery) -> None:
        return None

    async def ack(self, delivery: Delivery) -> None:
        return None

    async def stats(self) -> dict[str, float]:
        return {"queue_length": self._queue.qsize()}


class RedisQueue:
    """A Redis Stream ``<prefix>:tasks`` read by the consumer group ``<prefix>:agents``."""

    kind = "redis"

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:tasks"
        self.group = f"{prefix}:agents"
        self._claim_cursor = "0-0"

    async def setup(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, task: TaskMessage) -> None:
        fields: dict[Any, Any] = {
            "task_id": task.task_id,
            "prompt": task.prompt,
            "max_tokens": task.max_tokens,
        }
        await self.redis.xadd(self.stream, fields)

    async def receive(self, consumer: str, count: int, block: float) -> list[Delivery]:
        try:
            reply = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=int(block * 1000)
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("Consumer group %s is gone (stream deleted?); recreating it", self.group)
            await self.setup()
            return []
        deliveries: list[Delivery] = []
        for _stream, messages in _stream_entries(reply):
            deliveries.extend(await self._deliveries(messages, reclaimed=False))
        return deliveries

    async def reclaim(self, consumer: str, count: int, min_idle: float) -> list[Delivery]:
        try:
            reply = await self.redis.xautoclaim(
                self.stream,
                self.group,
                consumer,
                min_idle_time=int(min_idle * 1000),
                start_id=self._claim_cursor,
                count=count,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []
        self._claim_cursor = reply[0]
        return await self._deliveries(reply[1], reclaimed=True)

    async def extend(self, consumer: str, delivery: Delivery) -> None:
        await self.redis.xclaim(
            self.stream, self.group, consumer, 0, [delivery.message_id], justid=True
        )

    async def ack(self, delivery: Delivery) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, delivery.message_id)
            pipe.xdel(self.stream, delivery.message_id)
            await pipe.execute()

    async def _deliveries(self, messages: list[Any], *, reclaimed: bool) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for message_id, fields in messages:
            if not fields:  # deleted while pending: nothing left to run
                continue
            try:
                task = TaskMessage(
                    task_id=fields["task_id"],
                    prompt=fields["prompt"],
                    max_tokens=int(fields["max_tokens"]),
                )
            except (KeyError, ValueError):
                logger.error("Dropping malformed stream entry %s: %r", message_id, fields)
                await self.redis.xack(self.stream, self.group, message_id)
                continue
            deliveries.append(Delivery(message_id, task, reclaimed))
        return deliveries

    async def stats(self) -> dict[str, float]:
        length = await self.redis.xlen(self.stream)
        pending = await self.redis.xpending(self.stream, self.group)
        return {"queue_length": float(length), "queue_pending": float(pending["pending"])}


def _stream_entries(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's reply as (stream, messages) pairs for RESP2 (list) and RESP3 (dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: [messages]}
        return [(key, messages) for key, messages in reply.items()]
    return [(key, messages) for key, messages in reply]
