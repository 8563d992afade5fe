"""The reconciler: Postgres is the record of truth, the Redis stream only a way to deliver.

A task answered 202 is a row in Postgres before it is a message in Redis, and
Redis can lose the message: a restart without persistence, FLUSHALL, a trimmed
or deleted stream, a dropped consumer group. Every worker runs one reconciler.
Each pass takes the open tasks that showed no sign of life for the visibility
timeout (not queued, started, renewed or seen for that long; see
``PostgresStore.stale``) and asks the stream about their messages:

- still waiting to be delivered: seen, nothing to do;
- delivered and pending for a consumer: seen while its claim is fresh, else
  left to the queue's reclaim (XAUTOCLAIM), which hands it to a live consumer;
- missing, or delivered but pending for no one: queued again, and the row
  records the new message id. (Without Redis, a message id of another
  process is missing here: a killed worker's in-process queue died with it.)

Passes are bounded (``BATCH`` rows, ``MAX_BATCHES`` per pass) and cheap when
nothing is stale: one indexed query. Workers need no leader: the rows are
locked with SKIP LOCKED, so two reconcilers never re-queue the same task. A
task queued twice anyway (its message reappears, a worker was only slow) runs
at most once to the end: ``start_attempt`` refuses a finished task and the
first outcome wins; the extra attempt is counted.
"""

from __future__ import annotations

import asyncio
import logging
import random

from app.errors import BackendUnavailable
from app.metrics import Metrics
from app.outage import describe
from app.pg_store import PostgresStore, StaleTask
from app.queue import Place, Redelivery, TaskMessage

logger = logging.getLogger("app.reconciler")

BATCH = 200
MAX_BATCHES = 5
REDIS_BUDGET_SECONDS = 5.0  # the rows stay locked meanwhile: never wait long on Redis


class Reconciler:
    """One worker's reconcile loop; ``reconcile()`` is one pass, returning the tasks re-queued."""

    def __init__(
        self,
        store: PostgresStore,
        queue: Redelivery,
        metrics: Metrics,
        *,
        stale_after: float,
        default_max_tokens: int,
        interval: float | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.stale_after = stale_after
        self.default_max_tokens = default_max_tokens
        self.interval = interval or max(0.5, min(stale_after / 2, 15.0))
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=REDIS_BUDGET_SECONDS)

    async def _run(self) -> None:
        while True:
            # Jitter: the workers' passes spread out instead of colliding.
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            try:
                await self.reconcile()
            except Exception as exc:
                if not self._failing:  # one line per outage, not one per pass
                    logger.warning("Reconcile pass failed (retrying): %s", describe(exc))
                self._failing = True
            else:
                if self._failing:
                    logger.info("Reconcile passes work again")
                self._failing = False

    async def reconcile(self) -> int:
        requeued = 0
        for _ in range(MAX_BATCHES):
            seen, queued = await self._batch()
            requeued += queued
            if seen < BATCH:
                break
        return requeued

    async def _batch(self) -> tuple[int, int]:
        async with self.store.stale(self.stale_after, BATCH) as batch:
            if not batch.tasks:
                return 0, 0
            try:
                async with asyncio.timeout(REDIS_BUDGET_SECONDS):
                    updates, lost, orphans = await self._sort(batch.tasks)
                    if lost:
                        messages = [self._message(task) for task in lost]
                        new_ids = await self.queue.enqueue_many(messages)
                        updates += zip([task.task_id for task in lost], new_ids, strict=True)
                        await self.queue.discard(orphans)
            except TimeoutError:
                raise BackendUnavailable("Redis did not answer in time", "redis") from None
            await batch.seen(updates)
        if lost:
            self.metrics.inc("tasks_requeued", len(lost))
            logger.warning(
                "Re-queued %d task(s) that Redis no longer delivers: %s%s",
                len(lost),
                ", ".join(task.task_id for task in lost[:5]),
                " ..." if len(lost) > 5 else "",
            )
        return len(batch.tasks), len(lost)

    async def _sort(
        self, tasks: list[StaleTask]
    ) -> tuple[list[tuple[str, str | None]], list[StaleTask], list[str]]:
        """(rows to mark seen, tasks to queue again, stream entries to drop)."""
        places = await self.queue.locate([task.message_id for task in tasks])
        seen: list[tuple[str, str | None]] = []
        lost: list[StaleTask] = []
        orphans: list[str] = []
        for task, (place, idle) in zip(tasks, places, strict=True):
            if place is Place.WAITING:
                seen.append((task.task_id, None))
            elif place is Place.HELD:
                # Fresh: a live consumer renews it (only its store heartbeat failed).
                # Idle: XAUTOCLAIM hands it to a live consumer; leave it be.
                if idle < self.stale_after:
                    seen.append((task.task_id, None))
            else:
                lost.append(task)
                if place is Place.ORPHANED and task.message_id:
                    orphans.append(task.message_id)
        return seen, lost, orphans

    def _message(self, task: StaleTask) -> TaskMessage:
        return TaskMessage(task.task_id, task.prompt, task.max_tokens or self.default_max_tokens)
