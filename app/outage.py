"""What a failure means for the caller: a backend down now (503), or input it cannot store (422).

A restart of Redis or Postgres surfaces as a zoo of exceptions (asyncpg's
CannotConnectNowError while Postgres starts up, ConnectionDoesNotExistError on
a connection it closed, OSError while nothing listens, redis-py's
ConnectionError...). ``guard`` turns each into one ``BackendUnavailable`` that
names the check /ready would name, so callers answer 503 + Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
from redis import exceptions as redis_errors

from app.errors import BackendUnavailable

T = TypeVar("T")

REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also BusyLoadingError (Redis loading its data set)
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica answering while a failover runs
    redis_errors.OutOfMemoryError,
)
POSTGRES_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, and ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting up, killed
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
    asyncpg.InterfaceError,  # the pool or connection is closing
    # A connection caught mid-operation by the server going away ("cannot switch
    # to state ...; another operation is in progress"); the pool is then expired.
    asyncpg.exceptions.InternalClientError,
)
# Raised by both clients' sockets; ``guard`` knows which backend it called.
SOCKET_DOWN: tuple[type[BaseException], ...] = (OSError, TimeoutError)
INVALID_DATA: tuple[type[BaseException], ...] = (asyncpg.DataError, UnicodeEncodeError)
NAMES = {"redis": "Redis", "postgres": "Postgres"}


def is_down(exc: BaseException, check: str | None = None) -> bool:
    """Whether ``exc`` says the backend ``check`` (any, if None) cannot answer now."""
    if isinstance(exc, BackendUnavailable):
        return True
    if check == "redis":
        return isinstance(exc, REDIS_DOWN + SOCKET_DOWN)
    if check == "postgres":
        return isinstance(exc, POSTGRES_DOWN + SOCKET_DOWN)
    return isinstance(exc, REDIS_DOWN + POSTGRES_DOWN + SOCKET_DOWN)


def failing_check(exc: BaseException) -> str | None:
    """The check an unguarded backend failure belongs to: redis, postgres, backend, or None."""
    if isinstance(exc, BackendUnavailable):
        return exc.check or "backend"
    if isinstance(exc, REDIS_DOWN):
        return "redis"
    if isinstance(exc, POSTGRES_DOWN):
        return "postgres"
    if isinstance(exc, SOCKET_DOWN):
        return "backend"
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer in time"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def unavailable(check: str, exc: BaseException) -> BackendUnavailable:
    name = NAMES.get(check, check)
    return BackendUnavailable(f"{name} is unavailable ({describe(exc)}); retry shortly.", check)


async def guard(check: str, call: Awaitable[T]) -> T:
    """Await ``call`` to the backend ``check``; its outage becomes BackendUnavailable(check)."""
    try:
        return await call
    except BackendUnavailable:
        raise
    except Exception as exc:
        if is_down(exc, check):
            raise unavailable(check, exc) from exc
        raise


def invalid_data(exc: BaseException) -> str | None:
    """The reason a value was refused by the store (NUL in text, bad encoding), or None."""
    if isinstance(exc, INVALID_DATA):
        return describe(exc)
    return None


class OneLineOutages(logging.Filter):
    """A client library's warning about a backend outage as one line, not a traceback.

    asyncpg's pool logs every failed reconnect with its traceback while
    Postgres restarts; the exception's first line says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_down(record.exc_info[1]):
            record.msg = f"{record.getMessage()}: {describe(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
