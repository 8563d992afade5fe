"""A keep-alive load client for deploy tests: what every answer said, and when.

Like :mod:`tests.load` (one keep-alive connection per thread, requests back to
back), but it keeps each answer's status and body (the app's version) with its
time, so a test can tell which build answered, and which failures came when.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.load import ClientThreads


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it arrived
    status: int  # 0: no HTTP answer (a connection error)
    body: str  # the version, or the error


@dataclass
class DeployLoad(ClientThreads):
    """``with DeployLoad(url) as load: ...``; then ``load.answers``."""

    url: str
    connections: int = 4
    max_seconds: float = 60.0
    pause: float = 0.002  # between requests: steady traffic without saturating 2 cores
    # A new connection after this many requests, as clients and proxies churn them: new
    # connections are what reach new workers (a kept-alive one stays where it is).
    reconnect_every: int = 20
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._init_threads()

    def since(self, start: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= start]

    def wait_count(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.answers)} answers in {timeout}s")
            time.sleep(0.01)

    def tally(self, answers: list[Answer] | None = None) -> Counter[tuple[int, str]]:
        with self._lock:
            chosen = list(self.answers) if answers is None else answers
        return Counter((a.status, a.body) for a in chosen)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        while not self._stop.is_set() and time.monotonic() < deadline:
            with httpx.Client(limits=limits, timeout=10) as client:
                for _ in range(self.reconnect_every):
                    if self._stop.is_set():
                        break
                    self._one(client)
                    time.sleep(self.pause)

    def _one(self, client: httpx.Client) -> None:
        try:
            response = client.get(self.url)
            answer = Answer(time.monotonic(), response.status_code, response.text)
        except httpx.HTTPError as exc:
            answer = Answer(time.monotonic(), 0, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.answers.append(answer)
