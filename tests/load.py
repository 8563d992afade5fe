"""A bounded keep-alive load client for the end-to-end tests.

Each thread holds one keep-alive connection (an httpx.Client) and sends
requests back to back, the way wrk does, so a server that closes idle
keep-alive connections under a client's feet shows up as failures.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

import httpx


class ClientThreads:
    """Runs ``_run`` in ``connections`` threads from ``with`` to its end (bounded join).

    Subclasses set ``connections`` and call ``_init_threads()`` before use."""

    connections: int
    _stop: threading.Event
    _lock: threading.Lock
    _threads: list[threading.Thread]

    def _init_threads(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for _ in range(self.connections):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    pids: Counter[str] = field(default_factory=Counter)


class KeepAliveLoad(ClientThreads):
    """``with KeepAliveLoad(url, connections=8) as load: ...``; then ``load.result``."""

    def __init__(self, url: str, connections: int = 8, max_seconds: float = 60.0) -> None:
        self.url = url
        self.connections = connections
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._init_threads()

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.result.ok + self.result.failed < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"load reached only {self.result} in {timeout}s")
            time.sleep(0.01)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(limits=limits, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(self.url)
                except httpx.HTTPError as exc:
                    self._record(None, f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code == 200:
                    self._record(response.headers.get("x-worker-pid", "?"), None)
                else:
                    self._record(None, f"HTTP {response.status_code}")

    def _record(self, pid: str | None, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.result.ok += 1
                self.result.pids[pid or "?"] += 1
            else:
                self.result.failed += 1
                self.result.errors[error] += 1
