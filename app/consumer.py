"""Task consumers inside each worker: read the queue, call the LLM, store the result.

Each worker runs one consumer with bounded concurrency (FASTAGENTIC_TASK_CONCURRENCY).
Delivery is at-least-once: a message is acknowledged only after its outcome is
stored; a message whose consumer died is reclaimed by another one after the
visibility timeout, and the store's attempt counter bounds how often a task
is tried (LLM errors and lost workers alike) before it is marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from app.errors import LLMError
from app.llm import LLM
from app.metrics import Metrics
from app.queue import Delivery, TaskQueue
from app.store import TaskStore

logger = logging.getLogger("app.consumer")

RECEIVE_BLOCK_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
ERROR_PAUSE_SECONDS = 1.0


def backoff(attempt: int, base: float, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): base, 2*base, 4*base ... <= cap."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class Consumer:
    """One worker's consumer: a fetch loop and up to ``concurrency`` running tasks."""

    def __init__(
        self,
        queue: TaskQueue,
        store: TaskStore,
        llm: LLM,
        metrics: Metrics,
        *,
        name: str,
        concurrency: int,
        visibility_timeout: float,
        max_attempts: int,
        retry_backoff: float,
        max_tokens: int,
    ) -> None:
        self.queue = queue
        self.store = store
        self.llm = llm
        self.metrics = metrics
        self.name = name
        self.concurrency = concurrency
        self.visibility_timeout = visibility_timeout
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.max_tokens = max_tokens
        self.active: set[asyncio.Task[None]] = set()
        self._fetching = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def reclaim_every(self) -> float:
        return max(0.1, min(self.visibility_timeout / 2, 5.0))

    def start(self) -> None:
        self._fetching.set()
        self._loop_task = asyncio.create_task(self._run(), name=f"consumer {self.name}")

    def stop_fetching(self) -> None:
        """Drain: take no new messages (siblings will); running tasks go on."""
        self._fetching.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def stop(self, timeout: float) -> None:
        """Stop fetching, give running tasks ``timeout`` seconds, then cancel them:
        their messages stay unacknowledged and another worker reclaims them."""
        self.stop_fetching()
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task})
        if self.active:
            _, pending = await asyncio.wait(self.active, timeout=timeout)
            if pending:
                logger.warning(
                    "Consumer %s: %d task(s) still running at shutdown are left for"
                    " another worker to reclaim",
                    self.name,
                    len(pending),
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reclaim = loop.time()
        while self._fetching.is_set():
            free = self.concurrency - len(self.active)
            if free <= 0:
                await asyncio.wait(self.active, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                deliveries: list[Delivery] = []
                if loop.time() >= next_reclaim:
                    next_reclaim = loop.time() + self.reclaim_every
                    deliveries = await self.queue.reclaim(self.name, free, self.visibility_timeout)
                    self.metrics.inc("tasks_reclaimed", len(deliveries))
                if not deliveries:
                    block = min(RECEIVE_BLOCK_SECONDS, self.reclaim_every)
                    deliveries = await self.queue.receive(self.name, free, block)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Consumer %s cannot read the queue: %r", self.name, exc)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            for delivery in deliveries:
                task = asyncio.create_task(self._handle(delivery))
                self.active.add(task)
                task.add_done_callback(self.active.discard)

    async def _handle(self, delivery: Delivery) -> None:
        if delivery.reclaimed:
            logger.info(
                "Consumer %s reclaimed task %s (message %s)",
                self.name,
                delivery.task.task_id,
                delivery.message_id,
            )
        self.metrics.inc("tasks_running")
        keepalive = asyncio.create_task(self._keep_claimed(delivery))
        try:
            await self._process(delivery)
            await self.queue.ack(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The outcome could not be stored (backend down): leave the message
            # pending so that it is retried after the visibility timeout.
            logger.exception(
                "Consumer %s: task %s left for retry", self.name, delivery.task.task_id
            )
        finally:
            keepalive.cancel()
            self.metrics.dec("tasks_running")

    async def _keep_claimed(self, delivery: Delivery) -> None:
        """Reset the message's idle time so a long task is not reclaimed while alive."""
        while True:
            await asyncio.sleep(self.visibility_timeout / 3)
            with contextlib.suppress(Exception):
                await self.queue.extend(self.name, delivery)

    async def _process(self, delivery: Delivery) -> None:
        task = delivery.task
        last_error = "the worker running it stopped before it finished"
        while True:
            attempt = await self.store.start_attempt(task.task_id, self.name)
            if attempt is None:
                return  # already finished (a redelivery) or unknown: nothing to do
            if attempt > self.max_attempts:
                await self._fail(task.task_id, attempt - 1, last_error)
                return
            try:
                result = await self.llm.complete(task.prompt, min(task.max_tokens, self.max_tokens))
            except LLMError as exc:
                last_error = str(exc)
                if attempt >= self.max_attempts:
                    await self._fail(task.task_id, attempt, last_error)
                    return
                self.metrics.inc("tasks_retried")
                delay = backoff(attempt, self.retry_backoff)
                logger.info(
                    "Task %s attempt %d failed (%s); retrying in %.1fs",
                    task.task_id,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            await self.store.finish(task.task_id, result)
            self.metrics.inc("tasks_done")
            return

    async def _fail(self, task_id: str, attempts: int, error: str) -> None:
        message = f"Failed after {attempts} attempt(s): {error}"
        await self.store.fail(task_id, message)
        self.metrics.inc("tasks_failed")
        logger.warning("Task %s failed: %s", task_id, message)


def consumer_name(instance_id: str) -> str:
    return f"{instance_id}-{os.getpid()}"
