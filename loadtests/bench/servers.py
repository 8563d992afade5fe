"""The servers compared, started the same way: same app, same worker count, uvloop + httptools.

    supervisor  python -m supervisor APP -w N --port P --log-level warning --no-access-log
    gunicorn    gunicorn -k uvicorn_worker.UvicornWorker -w N -b 127.0.0.1:P APP --log-level warning
    uvicorn     uvicorn APP --workers N --port P --log-level warning --no-access-log
    granian     granian --interface asgi --workers N --port P APP --respawn-failed-workers

Each runs in its own session with its log in the run's raw/ folder; ``stop()``
TERMs the whole process group, waits, then KILLs what is left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench import procs

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Options:
    """What a scenario asks of a server beyond the worker count."""

    preload: bool = False
    max_requests: int = 0  # with a jitter of a tenth of it


@dataclass(frozen=True)
class Kind:
    name: str
    modules: tuple[str, ...]
    label: str

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) for module in self.modules)

    def unsupported(self, options: Options) -> str | None:
        """Why this server cannot run ``options`` (the cell is then n/a), or None."""
        if options.preload and self.name in ("uvicorn", "granian"):
            return f"{self.name} has no preload option"
        if options.max_requests and self.name == "granian":
            return "granian has no request-count recycling (only --workers-lifetime >= 60 s)"
        return None

    def command(self, app: str, port: int, workers: int, options: Options) -> list[str]:
        jitter = str(options.max_requests // 10)
        limit = str(options.max_requests)
        if self.name == "supervisor":
            cmd = [sys.executable, "-m", "supervisor", app, "-w", str(workers), "--host", HOST]
            cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
            cmd += ["--loop", "uvloop", "--http", "httptools"]
            if options.max_requests:
                cmd += ["--max-requests", limit, "--max-requests-jitter", jitter]
            return cmd + (["--preload"] if options.preload else [])
        if self.name == "gunicorn":
            # UvicornWorker picks uvloop and httptools itself ("auto") when installed.
            cmd = [_bin("gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", str(workers)]
            cmd += ["-b", f"{HOST}:{port}", app, "--log-level", "warning"]
            if options.max_requests:
                cmd += ["--max-requests", limit, "--max-requests-jitter", jitter]
            return cmd + (["--preload"] if options.preload else [])
        if self.name == "uvicorn":
            cmd = [_bin("uvicorn"), app, "--workers", str(workers), "--host", HOST]
            cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
            cmd += ["--loop", "uvloop", "--http", "httptools"]
            if options.max_requests:
                cmd += ["--limit-max-requests", limit, "--limit-max-requests-jitter", jitter]
            return cmd
        # granian does not respawn a dead worker unless told to.
        cmd = [_bin("granian"), "--interface", "asgi", "--workers", str(workers), "--host", HOST]
        cmd += ["--port", str(port), "--loop", "uvloop", "--http", "1", "--no-ws"]
        return [*cmd, "--log-level", "warning", "--respawn-failed-workers", app]


KINDS = {
    kind.name: kind
    for kind in (
        Kind("supervisor", ("supervisor",), "asgi-supervisor"),
        Kind("gunicorn", ("gunicorn", "uvicorn_worker"), "gunicorn + UvicornWorker"),
        Kind("uvicorn", ("uvicorn",), "uvicorn --workers"),
        Kind("granian", ("granian",), "granian"),
    )
}


def _bin(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


class Server:
    """A running server: ``workers()`` as the OS sees them, ``answers()`` as a client does."""

    def __init__(
        self,
        kind: Kind,
        *,
        app: str,
        cwd: Path,
        workers: int,
        log: Path,
        options: Options = Options(),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.count = workers
        self.port = procs.free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        self.command = kind.command(app, self.port, workers, options)
        environ = {**os.environ, "PYTHONPATH": str(cwd), **(env or {})}
        environ.pop("WEB_CONCURRENCY", None)
        self.started = time.monotonic()
        self.proc = procs.spawn(self.command, cwd=cwd, env=environ, log=log)
        self.pid = self.proc.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        procs.stop(self.proc, timeout=10)

    def workers(self) -> list[psutil.Process]:
        found: list[psutil.Process] = procs.workers_of(self.pid)
        if not found and self.count == 1 and self.kind.name == "uvicorn":
            # `uvicorn --workers 1` serves in its main process: no supervisor, no children.
            with contextlib.suppress(psutil.NoSuchProcess):
                found = [psutil.Process(self.pid)]
        return found

    def answers(self, path: str = "/") -> int | None:
        """The pid of the worker that answers on a new connection (X-Worker-Pid), else None."""
        try:
            response = httpx.get(self.url + path, timeout=2)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return int(response.headers.get("x-worker-pid", 0)) or -1

    def wait_serving(self, timeout: float = 30.0, path: str = "/") -> float:
        """Wait until all N workers are up and one answers; seconds since start."""

        def ready() -> bool | None:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.kind.name} exited early:\n{self.tail()}")
            pids = {worker.pid for worker in self.workers()}
            return True if len(pids) >= self.count and self.answers(path) else None

        if procs.poll(ready, timeout, interval=0.05) is None:
            raise ServerFailed(f"{self.kind.name} not serving in {timeout}s:\n{self.tail()}")
        return time.monotonic() - self.started

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ServerFailed(RuntimeError):
    """A server did not start, or died; the message carries the tail of its log."""


def version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_quietly(command: list[str], timeout: float = 30) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
