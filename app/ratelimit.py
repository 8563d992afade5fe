"""Per-user rate limit: a fixed window counter in Redis (one Lua call) or in memory.

The window starts at a user's first request and lasts the configured period;
``Retry-After`` and ``X-RateLimit-Reset`` are the seconds left in it. Every
Redis counter expires with its window (set in the same script that counts),
and the counters are keyed by ``Identity.rate_key``, a bounded keyspace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from redis.asyncio import Redis

_WINDOW = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the window ends

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset).encode()),
        ]
        if not self.allowed:
            headers.append((b"retry-after", str(self.reset).encode()))
        return headers


def decide(limit: int, count: int, ttl_ms: int) -> Decision:
    """The decision for the ``count``-th request in a window with ``ttl_ms`` left."""
    reset = max(1, math.ceil(ttl_ms / 1000))
    return Decision(count <= limit, limit, max(0, limit - count), reset)


class RateLimiter(Protocol):
    kind: str

    async def hit(self, user: str) -> Decision: ...


class MemoryRateLimiter:
    """This process's counters (each worker counts on its own)."""

    kind = "memory"

    def __init__(
        self, limit: int, window: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.windows: dict[str, tuple[float, int]] = {}

    async def hit(self, user: str) -> Decision:
        now = self.clock()
        ends, count = self.windows.get(user, (0.0, 0))
        if now >= ends:
            ends, count = now + self.window, 0
            if len(self.windows) > 100_000:  # forget ended windows rather than grow forever
                self.windows = {u: w for u, w in self.windows.items() if w[0] > now}
        count += 1
        self.windows[user] = (ends, count)
        return decide(self.limit, count, int((ends - now) * 1000))


class RedisRateLimiter:
    """Shared by every worker and host: ``<prefix>:rl:<user>`` counts the window."""

    kind = "redis"

    def __init__(self, redis: Redis, prefix: str, limit: int, window: int) -> None:
        self.prefix = prefix
        self.limit = limit
        self.window_ms = window * 1000
        self._script = redis.register_script(_WINDOW)

    async def hit(self, user: str) -> Decision:
        count, ttl = await self._script(keys=[f"{self.prefix}:rl:{user}"], args=[self.window_ms])
        return decide(self.limit, int(count), int(ttl))
