"""Backend restarts under load: 503 + Retry-After naming the failing check, never a 500.

The service runs under the real supervisor on a private redis-server and a
private Postgres, so the test can restart them without touching anyone
else's backends; /ready must turn 503 and come back on its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.cluster import APP, wait_finished
from tests.app.private import PrivatePostgres, PrivateRedis, private_postgres, private_redis
from tests.supervisor_process import SupervisorProcess, wait_for

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(
        not (PrivateRedis.available() and PrivatePostgres.available()),
        reason="needs redis-server and the Postgres server binaries",
    ),
]


@dataclass
class Traffic:
    """One client posting tasks and reading results and /ready, back to back, in a thread."""

    url: str
    seen: list[tuple[str, int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                self._call(client, "POST", "/agent", {"prompt": f"outage {n}"})
                if self.accepted:
                    self._call(client, "GET", f"/result/{self.accepted[-1]}", None)
                self._call(client, "GET", "/ready", None)
                time.sleep(0.01)

    def _call(self, client: httpx.Client, method: str, path: str, body: Any) -> None:
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.failures.append(f"{method} {path}: {exc!r}")
            return
        data = response.json()
        self.seen.append((path.split("/")[1], response.status_code, data, dict(response.headers)))
        if method == "POST" and response.status_code == 202:
            self.accepted.append(data["task_id"])

    def wait_accepted(self, more: int, timeout: float) -> None:
        target = len(self.accepted) + more
        wait_for(lambda: len(self.accepted) >= target, timeout, message=f"{more} more tasks")

    def ready(self) -> bool:
        last = [status for path, status, _, _ in self.seen[-3:] if path == "ready"]
        return bool(last) and last[-1] == 200


def test_backend_restarts_answer_503_naming_the_check_and_recover(tmp_path: Path) -> None:
    with private_redis(tmp_path) as redis_server, private_postgres() as pg_server:
        env = {
            "FASTAGENTIC_REDIS_URL": redis_server.url,
            "FASTAGENTIC_DATABASE_URL": pg_server.url,
            "FASTAGENTIC_RATE_LIMIT": "100000/minute",  # counted in Redis, never reached
            "FASTAGENTIC_TASK_VISIBILITY_TIMEOUT": "2",
            "FASTAGENTIC_LLM_FAKE_TOKENS": "3",
            "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.02",
            "FASTAGENTIC_READY_TIMEOUT": "1",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT": "1",
            "FASTAGENTIC_DB_CONNECT_TIMEOUT": "2",
            "FASTAGENTIC_INSTANCE_ID": "outage",
        }
        process = SupervisorProcess(tmp_path, [APP, "--workers", "2"], env=env)
        try:
            process.wait_serving(2, timeout=20)
            with Traffic(process.url) as traffic:
                traffic.wait_accepted(20, timeout=15)
                for server in (pg_server, redis_server, pg_server):
                    server.restart(down=1.0)
                    wait_for(traffic.ready, 20, interval=0.1, message="/ready back by itself")
                    traffic.wait_accepted(10, timeout=15)
            results = [wait_finished(process.url, t, timeout=60) for t in traffic.accepted]
        finally:
            process.stop()
    statuses = Counter((path, status) for path, status, _, _ in traffic.seen)
    assert not [s for s in statuses if s[1] >= 500 and s[1] != 503], statuses
    assert not traffic.failures, traffic.failures[:5]
    unavailable = [
        (path, body, headers) for path, status, body, headers in traffic.seen if status == 503
    ]
    not_ready = {
        c
        for path, body, _ in unavailable
        if path == "ready"
        for c, ok in body["checks"].items()
        if not ok
    }
    assert not_ready == {"postgres", "redis"}, statuses
    refused = [body for path, body, _ in unavailable if path != "ready"]
    assert {body["check"] for body in refused} == {"postgres", "redis"}, refused[:3]
    for path, body, headers in unavailable:
        if path != "ready":
            assert headers["retry-after"] == "1" and body["retry_after"] == 1
            assert body["message"].split(" ")[0] in ("Postgres", "Redis")
    assert {r["status"] for r in results} == {"done"}, Counter(r["status"] for r in results)
    log = process.log()
    assert "Unhandled error" not in log and "Traceback" not in log
