"""--ready-path's question, asked of real apps in-process (no socket, no process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from supervisor.worker import ready

STATE: dict[str, Any] = {"ok": False}


async def check(request: Request) -> PlainTextResponse:
    if request.query_params.get("boom"):
        raise RuntimeError("backend exploded")
    if request.query_params.get("hang"):
        await asyncio.sleep(60)
    # Lifespan state reaches the probe like any request (request.state).
    ok = STATE["ok"] and getattr(request.state, "pool", None) == "connected"
    return PlainTextResponse("ok" if ok else "not yet", status_code=200 if ok else 503)


APP = Starlette(routes=[Route("/ready", check)])


def ask(path: str, state: dict[str, Any] | None = None) -> str | None:
    return asyncio.run(ready.ask(APP, path, state))


def test_a_2xx_is_ready_anything_else_says_why() -> None:
    STATE["ok"] = False
    assert ask("/ready", {"pool": "connected"}) == "answered 503"
    STATE["ok"] = True
    assert ask("/ready", {"pool": "connected"}) is None
    assert ask("/ready", {}) == "answered 503"  # no lifespan state: not ready
    assert ask("/missing") == "answered 404"
    assert ask("/ready?boom=1") == "raised RuntimeError: backend exploded"


def test_a_probe_that_hangs_is_a_failed_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ready, "ANSWER_TIMEOUT", 0.2)
    assert ask("/ready?hang=1") == "no answer within 0.2s"


def test_wait_ready_asks_until_2xx_and_reports_each_new_reason_once() -> None:
    STATE["ok"] = False
    reported: list[str] = []

    async def scenario() -> bool:
        async def flip() -> None:
            await asyncio.sleep(0.6)
            STATE["ok"] = True

        flipper = asyncio.ensure_future(flip())
        got = await ready.wait_ready(
            APP, "/ready", {"pool": "connected"}, stop=lambda: False, report=reported.append
        )
        await flipper
        return got

    assert asyncio.run(scenario()) is True
    assert reported == ["not ready: GET /ready answered 503"]


def test_wait_ready_ends_when_told_to_stop() -> None:
    STATE["ok"] = False
    stops = iter([False, True])
    got = asyncio.run(
        ready.wait_ready(APP, "/ready", {}, stop=lambda: next(stops), report=lambda _: None)
    )
    assert got is False
