"""Task consumers inside each worker: read the queue, call the LLM, store the result.

Each worker runs one consumer with bounded concurrency (FASTAGENTIC_TASK_CONCURRENCY).
Delivery is at-least-once: a message is acknowledged only after its outcome is
stored; a message whose consumer died is reclaimed by another one after the
visibility timeout, and the store's attempt counter bounds how often a task
is tried (LLM errors, timeouts and lost workers alike) before it is marked
failed. While an attempt runs, its ``Claim`` keeps the message and is the
task's heartbeat; the claim ends with the attempt, whatever ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from app.errors import LLMError
from app.llm import LLM
from app.metrics import Metrics
from app.outage import describe, is_down
from app.queue import Delivery, TaskMessage, TaskQueue
from app.store import TaskStore

logger = logging.getLogger("app.consumer")

RECEIVE_BLOCK_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
ERROR_PAUSE_SECONDS = 1.0
CLAIM_STOP_SECONDS = 5.0
STORE_RETRY_FIRST = 0.1
STORE_RETRY_CAP = 2.0
T = TypeVar("T")


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
        attempt_timeout: float = 300.0,
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
        self.attempt_timeout = attempt_timeout
        self.active: set[asyncio.Task[None]] = set()
        self.claims: set[Claim] = set()  # live renewal loops: one per running delivery
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
        try:
            async with Claim(self, delivery):
                await self._process(delivery)
            await self.queue.ack(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The outcome could not be stored (backend down): leave the message
            # pending so that it is retried after the visibility timeout.
            logger.warning(
                "Consumer %s: task %s left for retry: %s",
                self.name,
                delivery.task.task_id,
                describe(exc),
                exc_info=not is_down(exc),
            )
        finally:
            self.metrics.dec("tasks_running")

    async def _stored(self, call: Callable[[], Awaitable[T]]) -> T:
        """A store call, retried while the store is down, for up to the visibility timeout.

        The claim is kept meanwhile, so a Postgres restart delays a task instead
        of leaving it for another worker to reclaim much later."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.visibility_timeout
        delay = STORE_RETRY_FIRST
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_down(exc) or loop.time() + delay > deadline:
                    raise
                logger.info("Consumer %s: store unavailable (%s); retrying", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_CAP)

    async def _attempt(self, task: TaskMessage) -> str:
        """One LLM call within FASTAGENTIC_TASK_TIMEOUT; LLMError when it fails or times out."""
        try:
            async with asyncio.timeout(self.attempt_timeout):
                return await self.llm.complete(task.prompt, min(task.max_tokens, self.max_tokens))
        except TimeoutError:
            raise LLMError(f"the attempt timed out after {self.attempt_timeout:g}s") from None

    async def _process(self, delivery: Delivery) -> None:
        task = delivery.task
        store = self.store
        last_error = "the worker running it stopped before it finished"
        while True:
            attempt = await self._stored(partial(store.start_attempt, task.task_id, self.name))
            if attempt is None:
                return  # already finished (a redelivery) or unknown: nothing to do
            if attempt > self.max_attempts:
                await self._fail(task.task_id, attempt - 1, last_error)
                return
            try:
                result = await self._attempt(task)
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
            if await self._stored(partial(store.finish, task.task_id, result)):
                self.metrics.inc("tasks_done")
            return

    async def _fail(self, task_id: str, attempts: int, error: str) -> None:
        message = f"Failed after {attempts} attempt(s): {error}"
        if await self._stored(partial(self.store.fail, task_id, message)):
            self.metrics.inc("tasks_failed")
            logger.warning("Task %s failed: %s", task_id, message)


class Claim:
    """The claim on one delivery, renewed while its attempt runs and ended with it.

    Leaving the block ends the renewals on every path (done, failed, cancelled,
    timed out). The loop also checks ``over`` after each wait and each call, so
    it stops within one renewal even when a client library loses the
    cancellation (redis-py can turn a CancelledError into a ConnectionError
    while it cleans up a connection); a lost cancellation once kept a failed
    task's message claimed forever, so no other worker ever reclaimed it.
    Each renewal resets the message's idle time (only while it is still this
    consumer's) and is the attempt's heartbeat in the store.
    """

    def __init__(self, consumer: Consumer, delivery: Delivery) -> None:
        self.consumer = consumer
        self.delivery = delivery
        self.over = asyncio.Event()
        self.held = True  # the message is still ours in the queue
        self.renewals = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Claim:
        name = f"keep-claim {self.delivery.task.task_id}"
        self._task = task = asyncio.create_task(self._renew(), name=name)
        self.consumer.claims.add(self)
        task.add_done_callback(lambda _: self.consumer.claims.discard(self))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.over.set()
        task = self._task
        assert task is not None
        task.cancel()
        await asyncio.wait({task}, timeout=CLAIM_STOP_SECONDS)

    async def _renew(self) -> None:
        consumer, delivery = self.consumer, self.delivery
        every = consumer.visibility_timeout / 3
        while not self.over.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self.over.wait()
            if self.over.is_set():
                return
            try:
                async with asyncio.timeout(every):
                    if self.held:
                        self.held = await consumer.queue.extend(consumer.name, delivery)
                        if not self.held:
                            logger.info(
                                "Task %s: its message is no longer this consumer's",
                                delivery.task.task_id,
                            )
                    await consumer.store.touch(delivery.task.task_id, consumer.name)
            except Exception as exc:
                logger.debug("Task %s: claim not renewed: %r", delivery.task.task_id, exc)
                continue
            self.renewals += 1


def consumer_name(instance_id: str) -> str:
    return f"{instance_id}-{os.getpid()}"
