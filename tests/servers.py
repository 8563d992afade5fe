"""The servers the behaviour suite compares: ours and the anchors, started the same way.

Each runs ``tests.apps.hello:app`` in its own session on a free port, logging
to a file; teardown TERMs the whole session, waits, then KILLs what is left.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.supervisor_process import REPO, LoggedProcess, free_port, wait_for

APP = "tests.apps.hello:app"


@dataclass(frozen=True)
class Kind:
    """One server: how to start it with N workers (and optionally max-requests)."""

    name: str
    modules: tuple[str, ...]

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) for module in self.modules)

    def command(self, port: int, workers: int, max_requests: int, liveness: int) -> list[str]:
        """The command line; ``max_requests``/``liveness`` (seconds) are each server's flag."""
        python = [sys.executable, "-m"]
        if self.name == "supervisor":
            cmd = [*python, "supervisor", APP, "--app-dir", str(REPO), "-w", str(workers)]
            cmd += ["--host", "127.0.0.1", "--port", str(port)]
            limit, alive = ["--max-requests"], ["--timeout-worker"]
        elif self.name == "gunicorn":
            cmd = [*python, "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", str(workers)]
            cmd += ["-b", f"127.0.0.1:{port}", "--chdir", str(REPO), APP]
            limit, alive = ["--max-requests"], ["--timeout"]
        else:
            cmd = [*python, "uvicorn", "--workers", str(workers), "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--app-dir", str(REPO), APP]
            limit, alive = ["--limit-max-requests"], ["--timeout-worker-healthcheck"]
        cmd += [*limit, str(max_requests)] if max_requests else []
        return cmd + ([*alive, str(liveness)] if liveness else [])


KINDS = (
    Kind("supervisor", ("supervisor",)),
    Kind("gunicorn", ("gunicorn", "uvicorn_worker")),
    Kind("uvicorn", ("uvicorn",)),
)


class Server(LoggedProcess):
    """A running server; ``workers()`` are its worker processes as the OS sees them."""

    def __init__(
        self, kind: Kind, tmp_path: Path, workers: int = 2, max_requests: int = 0, liveness: int = 0
    ):
        self.kind = kind
        self.name = kind.name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = kind.command(self.port, workers, max_requests, liveness)
        self._start(command, tmp_path / f"{kind.name}-{self.port}.log")

    def workers(self) -> set[int]:
        """Live worker children (uvicorn's multiprocessing resource tracker is not one)."""
        found: set[int] = set()
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                if "resource_tracker" in " ".join(child.cmdline()):
                    continue
            except psutil.NoSuchProcess:
                continue
            found.add(child.pid)
        return found

    def answers(self) -> int | None:
        """The pid of the worker that answers a request on a new connection, or None."""
        try:
            response = httpx.get(self.url + "/", timeout=2)
        except httpx.HTTPError:
            return None
        return int(response.headers["x-worker-pid"]) if response.status_code == 200 else None

    def wait_ready(self, count: int, timeout: float = 15.0) -> set[int]:
        def ready() -> set[int] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind.name} exited early:\n{self.log()}")
            pids = self.workers()
            return pids if len(pids) == count and self.answers() in pids else None

        return wait_for(ready, timeout, f"{count} {self.kind.name} workers\n{self.log()}")


@dataclass
class KeepAliveLoad:
    """Clients sending requests back to back on keep-alive connections, in threads."""

    url: str
    clients: int = 2
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> KeepAliveLoad:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def wait_requests(self, count: int, timeout: float) -> None:
        wait_for(lambda: self.ok + len(self.failures) >= count, timeout, f"{count} requests")

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url + "/")
                except httpx.HTTPError as exc:
                    self._record(f"{type(exc).__name__}: {exc}")
                    continue
                pid = int(response.headers.get("x-worker-pid", 0))
                self._record(None if response.status_code == 200 else str(response.status_code))
                with self._lock:
                    self.pids.add(pid)

    def _record(self, failure: str | None) -> None:
        with self._lock:
            if failure is None:
                self.ok += 1
            else:
                self.failures.append(failure)
