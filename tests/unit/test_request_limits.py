"""gunicorn's limit_request_line/fields/field_size, judged from the ASGI scope."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from supervisor.worker.limits import RequestLimits, refusal, request_line_length


def scope(target: bytes = b"/", query: bytes = b"", headers: int = 0, size: int = 1) -> Any:
    return {
        "type": "http",
        "method": "GET",
        "raw_path": target,
        "path": target.decode(),
        "query_string": query,
        "http_version": "1.1",
        "headers": [(f"x-h{i}".encode(), b"v" * size) for i in range(headers)],
    }


def test_request_line_length_counts_method_target_query_and_version() -> None:
    # "GET /abc?q=1 HTTP/1.1"
    assert request_line_length(scope(b"/abc", b"q=1")) == len("GET /abc?q=1 HTTP/1.1")
    assert request_line_length(scope(b"/")) == len("GET / HTTP/1.1")


@pytest.mark.parametrize(
    ("request_scope", "expected"),
    [
        (scope(b"/" + b"a" * 2000), 414),
        (scope(b"/", b"pad=" + b"a" * 2000), 414),
        (scope(headers=21), 431),
        (scope(headers=1, size=600), 431),
        (scope(headers=20, size=100), None),
    ],
)
def test_refusal_follows_gunicorns_limits(request_scope: Any, expected: int | None) -> None:
    assert refusal(request_scope, 1024, 20, 512) == expected


def test_zero_means_no_limit() -> None:
    assert refusal(scope(b"/" + b"a" * 9000, headers=500, size=9000), 0, 0, 0) is None


def test_a_refused_request_never_reaches_the_app() -> None:
    asyncio.run(_refused_request())


async def _refused_request() -> None:
    called: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    limited = RequestLimits(app, 100, 0, 0)
    await limited(scope(b"/" + b"a" * 200), None, send)
    assert not called and sent[0]["status"] == 414
    assert (b"connection", b"close") in sent[0]["headers"]
    await limited(scope(b"/ok"), None, send)
    assert len(called) == 1
