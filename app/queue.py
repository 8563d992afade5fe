"""The task queue: a Redis Stream with a consumer group, or an in-process queue.

Redis gives at-least-once delivery across workers and hosts: a message stays
pending for its consumer until acknowledged; one whose consumer stopped
answering (killed worker, lost host) is idle past the visibility timeout and
taken over by another consumer with XAUTOCLAIM. A consumer still working on a
message resets its idle time (``extend``, only while the message is still its
own) so long tasks are not stolen. ``locate`` tells the reconciler where a
task's message is, or that Redis lost it (restart, FLUSHALL, trim, deletion).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Sequence
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


class Place(enum.Enum):
    """Where a task's message is, for the reconciler."""

    MISSING = "missing"  # not in the stream: flushed, trimmed, deleted, or never queued
    WAITING = "waiting"  # in the stream, not yet delivered to the group
    HELD = "held"  # delivered and pending for a consumer (XAUTOCLAIM moves it on)
    ORPHANED = "orphaned"  # delivered but pending for no one: it would never run again


class TaskQueue(Protocol):
    kind: str

    async def setup(self) -> None: ...

    async def enqueue(self, task: TaskMessage) -> str:
        """Queue the task; its message id."""
        ...

    async def receive(self, consumer: str, count: int, block: float) -> list[Delivery]:
        """Up to ``count`` new messages, waiting up to ``block`` seconds for the first."""
        ...

    async def reclaim(self, consumer: str, count: int, min_idle: float) -> list[Delivery]:
        """Messages other consumers left pending for longer than ``min_idle`` seconds."""
        ...

    async def extend(self, consumer: str, delivery: Delivery) -> bool:
        """Tell the backend the message is still being worked on; False if it is no longer ours."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def stats(self) -> dict[str, float]: ...


class Redelivery(Protocol):
    """What the reconciler needs from a queue (both queues have it)."""

    async def locate(self, message_ids: Sequence[str | None]) -> list[tuple[Place, float]]: ...

    async def enqueue_many(self, tasks: Sequence[TaskMessage]) -> list[str]: ...

    async def discard(self, message_ids: Sequence[str]) -> None: ...


class MemoryQueue:
    """One process's queue: tasks are consumed by the worker that accepted them.

    Delivered messages stay held until acknowledged, so one whose attempt gave
    up is handed out again after the visibility timeout, as Redis would. What a
    killed worker held is gone with it: with Postgres, the reconciler of a
    sibling queues it again (message ids carry the pid, so ``locate`` knows
    them for this process only)."""

    kind = "memory"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._counter = 0
        self._waiting: set[str] = set()
        self._held: dict[str, tuple[Delivery, float]] = {}

    async def setup(self) -> None:
        return None

    async def enqueue(self, task: TaskMessage) -> str:
        self._counter += 1
        message_id = f"{os.getpid()}-{self._counter}"
        self._waiting.add(message_id)
        self._queue.put_nowait(Delivery(message_id, task))
        return message_id

    async def enqueue_many(self, tasks: Sequence[TaskMessage]) -> list[str]:
        return [await self.enqueue(task) for task in tasks]

    async def receive(self, consumer: str, count: int, block: float) -> list[Delivery]:
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=block)
        except TimeoutError:
            return []
        deliveries = [first]
        while len(deliveries) < count and not self._queue.empty():
            deliveries.append(self._queue.get_nowait())
        now = time.monotonic()
        for delivery in deliveries:
            self._waiting.discard(delivery.message_id)
            self._held[delivery.message_id] = (delivery, now)
        return deliveries

    async def reclaim(self, consumer: str, count: int, min_idle: float) -> list[Delivery]:
        now = time.monotonic()
        idle = [d for d, at in self._held.values() if now - at >= min_idle][:count]
        for delivery in idle:
            self._held[delivery.message_id] = (delivery, now)
        return [Delivery(d.message_id, d.task, reclaimed=True) for d in idle]

    async def extend(self, consumer: str, delivery: Delivery) -> bool:
        if delivery.message_id not in self._held:
            return False
        self._held[delivery.message_id] = (delivery, time.monotonic())
        return True

    async def ack(self, delivery: Delivery) -> None:
        self._held.pop(delivery.message_id, None)

    async def locate(self, message_ids: Sequence[str | None]) -> list[tuple[Place, float]]:
        now = time.monotonic()
        places: list[tuple[Place, float]] = []
        for message_id in message_ids:
            if message_id in self._waiting:
                places.append((Place.WAITING, 0.0))
            elif message_id is not None and message_id in self._held:
                places.append((Place.HELD, now - self._held[message_id][1]))
            else:  # another process's, or gone with a killed worker
                places.append((Place.MISSING, 0.0))
        return places

    async def discard(self, message_ids: Sequence[str]) -> None:
        return None

    async def stats(self) -> dict[str, float]:
        return {"queue_length": self._queue.qsize(), "queue_pending": len(self._held)}


_EXTEND = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


class RedisQueue:
    """A Redis Stream ``<prefix>:tasks`` read by the consumer group ``<prefix>:agents``."""

    kind = "redis"

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:tasks"
        self.group = f"{prefix}:agents"
        self._claim_cursor = "0-0"
        self._extend = redis.register_script(_EXTEND)

    async def setup(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, task: TaskMessage) -> str:
        return str(await self.redis.xadd(self.stream, _fields(task)))

    async def enqueue_many(self, tasks: Sequence[TaskMessage]) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.xadd(self.stream, _fields(task))
            return [str(message_id) for message_id in await pipe.execute()]

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
            self._claim_cursor = "0-0"  # a new stream starts its ids afresh
            return []
        self._claim_cursor = reply[0]
        return await self._deliveries(reply[1], reclaimed=True)

    async def extend(self, consumer: str, delivery: Delivery) -> bool:
        """Reset the idle time of a message this consumer still holds (never steal it back)."""
        try:
            held = await self._extend(
                keys=[self.stream], args=[self.group, consumer, delivery.message_id]
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return False
        return bool(held)

    async def ack(self, delivery: Delivery) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, delivery.message_id)
            pipe.xdel(self.stream, delivery.message_id)
            await pipe.execute()

    async def locate(self, message_ids: Sequence[str | None]) -> list[tuple[Place, float]]:
        """Where each message is, with its idle seconds when HELD.

        A missing group is recreated (from the stream's start, so it delivers
        what the stream still holds)."""
        last = _stream_id(await self._last_delivered())
        known = [message_id for message_id in message_ids if message_id]
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in known:
                pipe.xrange(self.stream, message_id, message_id, count=1)
                pipe.xpending_range(self.stream, self.group, message_id, message_id, 1)
            replies = await pipe.execute(raise_on_error=False)
        places: dict[str, tuple[Place, float]] = {}
        for index, message_id in enumerate(known):
            entry, pending = replies[2 * index], replies[2 * index + 1]
            for reply in (entry, pending):
                if isinstance(reply, Exception):
                    raise reply
            if not entry:
                places[message_id] = (Place.MISSING, 0.0)
            elif pending:
                places[message_id] = (Place.HELD, pending[0]["time_since_delivered"] / 1000)
            elif _stream_id(message_id) > last:
                places[message_id] = (Place.WAITING, 0.0)
            else:
                places[message_id] = (Place.ORPHANED, 0.0)
        return [places[m] if m else (Place.MISSING, 0.0) for m in message_ids]

    async def discard(self, message_ids: Sequence[str]) -> None:
        """Remove entries that will never be delivered again (replaced by new ones)."""
        if message_ids:
            await self.redis.xdel(self.stream, *message_ids)

    async def _last_delivered(self) -> str:
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            groups = []
        for group in groups:
            if group["name"] == self.group:
                return str(group["last-delivered-id"])
        logger.warning(
            "Consumer group %s is gone (Redis lost its data?); recreating it", self.group
        )
        await self.setup()
        return "0-0"

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


def _fields(task: TaskMessage) -> dict[Any, Any]:
    return {"task_id": task.task_id, "prompt": task.prompt, "max_tokens": task.max_tokens}


def _stream_id(message_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = message_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _stream_entries(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's reply as (stream, messages) pairs for RESP2 (list) and RESP3 (dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: [messages]}
        return [(key, messages) for key, messages in reply.items()]
    return [(key, messages) for key, messages in reply]
