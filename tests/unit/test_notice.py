"""The drain notice (no processes): awaitable, set once, in every scope that passes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import supervisor
from supervisor.notice import DRAIN_EXTENSION, DrainNotice, WithDrainNotice, add_to_scope


def test_waiters_wake_when_it_is_set_and_later_awaits_return_at_once() -> None:
    async def scenario() -> list[str]:
        notice = DrainNotice()
        seen: list[str] = []

        async def waiter(name: str) -> None:
            await notice
            seen.append(name)

        tasks = [asyncio.ensure_future(waiter(n)) for n in ("a", "b")]
        await asyncio.sleep(0.01)
        assert seen == [] and not notice.is_set() and notice.seconds_left() is None
        notice.set(time.monotonic() + 5)
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        await asyncio.wait_for(notice.wait(), 0.1)  # already set: no wait
        left = notice.seconds_left()
        assert left is not None and 4 < left <= 5
        return seen

    assert sorted(asyncio.run(scenario())) == ["a", "b"]


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def scenario() -> int:
        notice = DrainNotice()
        task = asyncio.ensure_future(notice.wait())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return len(notice._waiters)

    assert asyncio.run(scenario()) == 0


def test_outside_a_worker_it_is_never_set() -> None:
    async def scenario() -> bool:
        try:
            await asyncio.wait_for(supervisor.draining(), 0.05)
        except TimeoutError:
            return True
        return False

    assert not supervisor.is_draining()
    assert asyncio.run(scenario())


def test_every_scope_that_passes_gets_it_beside_other_extensions() -> None:
    notice = DrainNotice()
    received: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(scope)

    layer = WithDrainNotice(app, notice)
    scopes: list[dict[str, Any]] = [
        {"type": "lifespan"},
        {"type": "websocket", "extensions": {"websocket.http.response": {}}},
        {"type": "http", "extensions": None},
    ]
    for scope in scopes:
        asyncio.run(layer(scope, None, None))
    assert [s["extensions"][DRAIN_EXTENSION] for s in received] == [notice] * 3
    assert "websocket.http.response" in received[1]["extensions"]
    plain: dict[str, Any] = {"type": "http"}
    add_to_scope(plain)
    assert plain["extensions"][DRAIN_EXTENSION] is supervisor.notice.NOTICE
