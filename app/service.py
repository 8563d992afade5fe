"""One worker's backends: pools opened at lifespan startup, closed at shutdown.

Each worker owns its pools (a pool must never cross a fork), so the totals
are ``workers x pool size``: logged at start so capacity planning is explicit.
Unset URLs select in-process backends, so a fresh checkout serves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import BusyLoadingError

from app.consumer import Consumer, consumer_name
from app.errors import BackendUnavailable
from app.identity import Authenticator, TrustedProxies, load_api_keys
from app.llm import LLM, build_llm
from app.metrics import Metrics
from app.outage import describe
from app.pg_store import PostgresStore
from app.queue import MemoryQueue, RedisQueue, TaskQueue
from app.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from app.reconciler import Reconciler
from app.settings import Settings, redact
from app.store import MemoryStore, RedisStore, TaskStore

logger = logging.getLogger("app.service")

CONSUMER_STOP_CAP_SECONDS = 10.0
POOL_CLOSE_SECONDS = 5.0
STARTING_PAUSE_SECONDS = 0.2
T = TypeVar("T")


class Service:
    """Settings, pools, backends and the consumer of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.instance_id)
        self.draining = False
        self.drained = asyncio.Event()
        self.redis: Redis | None = None
        self.pg: Any | None = None  # asyncpg.Pool
        self.queue: TaskQueue = MemoryQueue()
        self.store: TaskStore = MemoryStore()
        limit, window = settings.rate_limit_rule
        self.limiter: RateLimiter | None = MemoryRateLimiter(limit, window) if limit else None
        self.llm: LLM = build_llm(settings)
        self.identity = Authenticator(
            load_api_keys(settings.api_keys, settings.api_keys_file),
            TrustedProxies(settings.trusted_proxies),
        )
        self.consumer: Consumer | None = None
        self.reconciler: Reconciler | None = None

    async def start(self) -> None:
        """Open and check the pools, migrate, start the consumer; BackendUnavailable if not."""
        settings = self.settings
        try:
            if settings.redis_url:
                self.redis = await _open_redis(settings)
            if settings.db_dsn:
                self.pg = await _open_postgres(settings)
            self._choose_backends()
            await self.store.setup()
            await self.queue.setup()
        except BaseException:
            await self.close_pools()
            raise
        self._log_pools()
        self.consumer = Consumer(
            self.queue,
            self.store,
            self.llm,
            self.metrics,
            name=consumer_name(settings.instance_id),
            concurrency=settings.task_concurrency,
            visibility_timeout=settings.task_visibility_timeout,
            max_attempts=settings.task_max_attempts,
            retry_backoff=settings.task_retry_backoff,
            max_tokens=settings.llm_max_tokens,
            attempt_timeout=settings.task_timeout,
        )
        self.consumer.start()
        if isinstance(self.store, PostgresStore) and isinstance(
            self.queue, (RedisQueue, MemoryQueue)
        ):
            self.reconciler = Reconciler(
                self.store,
                self.queue,
                self.metrics,
                stale_after=settings.task_visibility_timeout,
                default_max_tokens=settings.llm_max_tokens,
            )
            self.reconciler.start()

    def _choose_backends(self) -> None:
        settings = self.settings
        if self.redis is not None:
            self.queue = RedisQueue(self.redis, settings.redis_prefix)
            limit, window = settings.rate_limit_rule
            if limit:
                self.limiter = RedisRateLimiter(self.redis, settings.redis_prefix, limit, window)
        if self.pg is not None:
            self.store = PostgresStore(self.pg, settings.db_schema)
        elif self.redis is not None:
            self.store = RedisStore(self.redis, settings.redis_prefix, settings.result_ttl)

    def backends(self) -> dict[str, str]:
        return {
            "queue": self.queue.kind,
            "store": self.store.kind,
            "rate_limit": self.limiter.kind if self.limiter else "off",
            "llm": self.llm.name,
        }

    def _log_pools(self) -> None:
        settings = self.settings
        workers = settings.workers
        shown = str(workers) if workers else "workers"

        def total(size: int) -> str:
            return f"{workers * size}" if workers else f"{size} x workers"

        if self.redis is not None:
            size = settings.redis_pool_size
            logger.info(
                "Redis pool: %d connection(s) per worker; connections = workers x pool size"
                " = %s x %d = %s",
                size,
                shown,
                size,
                total(size),
            )
        if self.pg is not None:
            low, high = settings.db_pool_size, settings.db_pool_size + settings.db_max_overflow
            logger.info(
                "Postgres pool: %d-%d connection(s) per worker (pool size + max overflow);"
                " connections = workers x pool size = %s x %d..%d = %s..%s",
                low,
                high,
                shown,
                low,
                high,
                total(low),
                total(high),
            )
        if self.redis is None or self.pg is None:
            logger.info("Backends: %s", self.backends())
        if self.redis is None and (workers or 1) > 1:
            logger.warning(
                "In-process queue and store with %d workers: a result is visible only in the"
                " worker that accepted its task. Set FASTAGENTIC_REDIS_URL (and DATABASE_URL).",
                workers,
            )

    def drain(self) -> None:
        """The worker stops taking work: /ready fails, streams reconnect, no new tasks."""
        if self.draining:
            return
        self.draining = True
        self.drained.set()
        if self.consumer is not None:
            self.consumer.stop_fetching()
        logger.info(
            "Draining: %d stream(s) asked to reconnect, %d task(s) finishing",
            self.metrics["streams_active"],
            self.metrics["tasks_running"],
        )

    async def stop(self) -> None:
        self.drain()
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.consumer is not None:
            timeout = min(self.settings.timeout_graceful, CONSUMER_STOP_CAP_SECONDS)
            await self.consumer.stop(timeout)
        with contextlib.suppress(Exception):
            await self.llm.aclose()
        await self.close_pools()

    async def close_pools(self) -> None:
        if self.redis is not None:
            redis, self.redis = self.redis, None
            with contextlib.suppress(Exception):
                await redis.aclose()
                await redis.connection_pool.aclose()
        if self.pg is not None:
            pool, self.pg = self.pg, None
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
            except Exception:
                pool.terminate()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ping every configured backend within FASTAGENTIC_READY_TIMEOUT."""
        checks: dict[str, bool] = {"app": not self.draining}
        errors: dict[str, str] = {}
        if self.draining:  # answer at once: the load balancer must move on now
            return False, {"ready": False, "checks": checks, "errors": {"app": "draining"}}
        probes: dict[str, Any] = {}
        if self.settings.redis_url:
            probes["redis"] = self._ping_redis()
        if self.settings.db_dsn:
            probes["postgres"] = self._ping_postgres()
        results = await asyncio.gather(*probes.values(), return_exceptions=True)
        for name, outcome in zip(probes, results, strict=True):
            checks[name] = outcome is True
            if outcome is not True:
                errors[name] = _describe_error(outcome)
        ready = all(checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if errors:
            body["errors"] = errors
        return ready, body

    async def _ping_redis(self) -> bool:
        if self.redis is None:
            raise BackendUnavailable("not connected")
        return bool(await asyncio.wait_for(self.redis.ping(), self.settings.ready_timeout))

    async def _ping_postgres(self) -> bool:
        if self.pg is None:
            raise BackendUnavailable("not connected")
        try:
            value = await asyncio.wait_for(
                self.pg.fetchval("SELECT 1"), self.settings.ready_timeout
            )
        except Exception:
            # Postgres may have restarted: the next probe must use new connections.
            with contextlib.suppress(Exception):
                await self.pg.expire_connections()
            raise
        return bool(value == 1)


def _describe_error(outcome: object) -> str:
    if isinstance(outcome, BaseException):
        return describe(outcome)
    return f"unexpected answer {outcome!r}"


async def _open_redis(settings: Settings) -> Redis:
    assert settings.redis_url is not None
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_pool_timeout,
        socket_connect_timeout=settings.redis_pool_timeout,
        decode_responses=True,
        health_check_interval=30,
        client_name=f"{settings.client_name}-{os.getpid()}",
    )
    redis = Redis(connection_pool=pool)
    try:
        await _retry_starting(redis.ping, settings.redis_pool_timeout)
    except Exception as exc:
        await redis.aclose()
        await pool.aclose()
        raise BackendUnavailable(
            f"Cannot reach Redis at {redact(settings.redis_url)} (FASTAGENTIC_REDIS_URL):"
            f" {_describe_error(exc)}"
        ) from None
    return redis


async def _open_postgres(settings: Settings) -> Any:
    assert settings.db_dsn is not None
    dsn = settings.db_dsn

    def create() -> Any:  # asyncpg.Pool, awaitable
        return asyncpg.create_pool(
            dsn,
            min_size=settings.db_pool_size,
            max_size=settings.db_pool_size + settings.db_max_overflow,
            timeout=settings.db_connect_timeout,
            max_inactive_connection_lifetime=settings.db_pool_recycle,
            server_settings={"application_name": f"{settings.client_name}-{os.getpid()}"},
        )

    try:
        return await _retry_starting(create, settings.db_connect_timeout)
    except Exception as exc:
        raise BackendUnavailable(
            f"Cannot reach Postgres at {redact(settings.db_dsn)} (FASTAGENTIC_DATABASE_URL):"
            f" {_describe_error(exc)}"
        ) from None


# A backend that says it is starting up (or is full) is not misconfigured: a
# worker respawned during a restart waits for it rather than failing to boot.
# Anything else (refused, unknown host, bad password) still fails fast.
STARTING: tuple[type[BaseException], ...] = (
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    BusyLoadingError,
)


async def _retry_starting(connect: Callable[[], Awaitable[T]], timeout: float) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.wait_for(connect(), max(0.1, deadline - loop.time()))
        except STARTING:
            if loop.time() + STARTING_PAUSE_SECONDS >= deadline:
                raise
        await asyncio.sleep(STARTING_PAUSE_SECONDS)
