"""--reload for local development: watch source files, roll the workers on a change.

Unlike ``uvicorn --reload`` this keeps the supervisor (and its socket) alive
and works with any number of workers: a change is a rolling restart whose new
workers import the new code. A change that breaks the import does not take
the port down: the old workers keep serving, or, when none can, a worker
answers 503 with the error until the next good save.

watchfiles runs its Rust watcher in a thread; that is the one thread the
supervisor has, and only with --reload.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from supervisor.config import Config

logger = logging.getLogger("supervisor")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDE_DIRS = (
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
)
# More workers than this under --reload looks like a production command line.
RELOAD_WORKERS_WARN = 4


class SourceFilter:
    """Files matching an include glob, outside excluded folders and exclude globs.

    watchfiles (a Rust extension) is imported only when --reload is on, so a
    production supervisor never loads it.
    """

    def __init__(self, includes: Sequence[str], excludes: Sequence[str]) -> None:
        import watchfiles  # noqa: PLC0415

        self.includes = tuple(includes) or DEFAULT_INCLUDES
        self.excludes = tuple(excludes)
        self._default = watchfiles.DefaultFilter(
            ignore_dirs=(*DEFAULT_EXCLUDE_DIRS, *self.excludes)
        )

    def __call__(self, change: Any, path: str) -> bool:
        if not self._default(change, path):
            return False
        return is_watched(Path(path), self.includes, self.excludes)


def is_watched(path: Path, includes: Sequence[str], excludes: Sequence[str]) -> bool:
    """Pure: does a change to ``path`` call for a reload?"""
    if any(part in DEFAULT_EXCLUDE_DIRS for part in path.parts):
        return False
    for pattern in excludes:
        if fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(str(path), pattern):
            return False
        if any(fnmatch.fnmatch(part, pattern) for part in path.parent.parts):
            return False
    return any(
        fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(str(path), pattern)
        for pattern in includes or DEFAULT_INCLUDES
    )


def watched_dirs(config: Config) -> list[Path]:
    dirs = config.reload_dirs or [config.app_dir]
    return [Path(d).resolve() for d in dirs]


def warnings_for(config: Config) -> list[str]:
    """Reload never runs in production by accident: say so loudly when it looks like it."""
    notes: list[str] = []
    if config.preload:
        notes.append(
            "--reload with --preload: after the first change, workers import the app"
            " themselves (preloading cannot see new code); do not use --reload in production"
        )
    if config.workers > RELOAD_WORKERS_WARN:
        notes.append(
            f"--reload with {config.workers} workers (more than {RELOAD_WORKERS_WARN}): this"
            " looks like a production command line; --reload is for development only"
        )
    return notes


async def watch(config: Config, on_change: Callable[[list[str]], Awaitable[None] | None]) -> None:
    """Call ``on_change(paths)`` after each debounced batch of source changes, forever."""
    dirs = watched_dirs(config)
    watch_filter = SourceFilter(config.reload_includes, config.reload_excludes)
    logger.info(
        "Watching %s for changes (%s)",
        ", ".join(str(d) for d in dirs),
        ", ".join(watch_filter.includes),
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we log the changes ourselves
    debounce_ms = max(int(config.reload_delay * 1000), 1)
    import watchfiles  # noqa: PLC0415 - see SourceFilter

    async for changes in watchfiles.awatch(
        *dirs, watch_filter=watch_filter, debounce=debounce_ms, step=20
    ):
        paths = sorted({_relative(path) for _, path in changes})
        result = on_change(paths)
        if result is not None:
            await result


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


class ReloadErrorApp:
    """What the port answers while no worker can import the app: 503 and the error."""

    def __init__(self, message: str) -> None:
        self.body = (
            "The app failed to load; fix it and save to reload.\n\n" + message + "\n"
        ).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(self.body)).encode()),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def drop_stale_bytecode(paths: list[str]) -> None:
    """Remove the cached bytecode of changed sources before new workers import them.

    A .pyc is trusted when the source's mtime (whole seconds) and size match:
    two saves within one second that keep the size (v1 -> v2) would otherwise
    import the old code.
    """
    for path in paths:
        if not path.endswith(".py"):
            continue
        with contextlib.suppress(OSError, ValueError, NotImplementedError):
            Path(importlib.util.cache_from_source(path)).unlink(missing_ok=True)
