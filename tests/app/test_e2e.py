"""The reference service under the real supervisor, with the real Redis and Postgres.

Every test uses its own Redis key prefix and Postgres schema (dropped at the
end); every process runs in its own session and is killed at teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.app.cluster import REDIS_URL, Backend, backend, start, wait_finished
from tests.supervisor_process import REPO, SupervisorProcess, free_port, wait_for

pytestmark = pytest.mark.services


# One cluster for the request-level behaviours -------------------------------


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SupervisorProcess, Backend]]:
    with backend() as slice_:
        env = {
            **slice_.env,
            "FASTAGENTIC_WORKERS": "3",
            "FASTAGENTIC_RATE_LIMIT": "5/minute",
            "FASTAGENTIC_LLM_FAKE_TOKENS": "5",
            "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.05",
            "FASTAGENTIC_TASK_CONCURRENCY": "2",
            "FASTAGENTIC_DB_POOL_SIZE": "2",
            "FASTAGENTIC_DB_MAX_OVERFLOW": "3",
            "FASTAGENTIC_REDIS_POOL_SIZE": "4",
            "FASTAGENTIC_MAX_BODY_SIZE": "4096",
        }
        process = start(tmp_path_factory.mktemp("cluster"), "--workers", "3", env=env)
        try:
            process.wait_serving(3, timeout=15)
            yield process, slice_
        finally:
            process.stop()


def test_tasks_round_trip_through_several_workers(
    cluster: tuple[SupervisorProcess, Backend],
) -> None:
    process, slice_ = cluster
    with httpx.Client(base_url=process.url, timeout=5) as client:
        ids = []
        for i in range(30):
            response = client.post(
                "/agent", json={"prompt": f"q{i}"}, headers={"x-user-id": f"r{i}"}
            )
            assert response.status_code == 202, response.text
            assert response.headers["x-fastagentic-instance"] == "e2e"
            ids.append(response.json()["task_id"])
    results = [wait_finished(process.url, task_id, timeout=20) for task_id in ids]
    assert {r["status"] for r in results} == {"done"}
    assert all(len(r["result"].split()) == 5 for r in results)
    workers = slice_.query("SELECT DISTINCT worker FROM {schema}.agent_tasks")
    assert len(workers) >= 2, "every task ran in one worker"
    ready = httpx.get(f"{process.url}/ready", timeout=5).json()
    assert ready["checks"] == {"app": True, "redis": True, "postgres": True}
    assert ready["backends"]["queue"] == "redis" and ready["backends"]["store"] == "postgres"


def test_pools_are_per_worker_and_bounded(cluster: tuple[SupervisorProcess, Backend]) -> None:
    _, slice_ = cluster
    pg = slice_.query(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE $1",
        f"{slice_.name}-%",
    )[0]["n"]
    assert 3 * 2 <= pg <= 3 * (2 + 3)  # workers x pool size .. workers x (size + overflow)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = [c["name"] for c in client.client_list() if c["name"].startswith(slice_.name)]
    finally:
        client.close()
    assert 3 <= len(names) <= 3 * 4
    assert len({n.rsplit("-", 1)[1] for n in names}) == 3  # one pool per worker pid


def test_idempotency_key(cluster: tuple[SupervisorProcess, Backend]) -> None:
    process, _ = cluster
    headers = {"idempotency-key": "order-42", "x-user-id": "idem"}
    with httpx.Client(base_url=process.url, timeout=5) as client:
        first = client.post("/agent", json={"prompt": "once"}, headers=headers)
        # New connections, so the retries may land on other workers.
        again = [
            httpx.post(f"{process.url}/agent", json={"prompt": "once"}, headers=headers, timeout=5)
            for _ in range(3)
        ]
        other = client.post(
            "/agent", json={"prompt": "once"}, headers={**headers, "x-user-id": "x"}
        )
    assert first.status_code == 202
    assert {r.json()["task_id"] for r in again} == {first.json()["task_id"]}
    assert all(r.headers["idempotent-replayed"] == "true" for r in again)
    assert other.json()["task_id"] != first.json()["task_id"]


def test_rate_limit_is_shared_by_all_workers(cluster: tuple[SupervisorProcess, Backend]) -> None:
    process, _ = cluster
    codes = []
    for _ in range(7):  # a new connection each time: several workers count together
        response = httpx.post(
            f"{process.url}/agent", json={"prompt": "p"}, headers={"x-user-id": "rl"}, timeout=5
        )
        codes.append(response.status_code)
    assert codes == [202] * 5 + [429] * 2
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(response.headers["retry-after"]) <= 60
    assert response.json()["error"] == "Too Many Requests"


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", "/agent", b"{oops", 422),
        ("POST", "/agent", b'{"prompt": null}', 422),
        ("POST", "/agent", b"x" * 5000, 413),
        ("POST", "/agent/stream", b'{"max_tokens": "many"}', 422),
        ("PUT", "/agent", b"{}", 405),
        ("GET", "/result/not-a-task", None, 404),
        ("GET", "/nothing/here", None, 404),
    ],
)
def test_bad_requests_are_4xx_json(
    cluster: tuple[SupervisorProcess, Backend],
    method: str,
    path: str,
    content: bytes | None,
    status: int,
) -> None:
    process, _ = cluster
    headers = {"x-user-id": f"bad-{uuid.uuid4().hex}", "content-type": "application/json"}
    response = httpx.request(
        method, process.url + path, content=content, headers=headers, timeout=5
    )
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "message", "error_id"}


def test_metrics_are_prometheus_text(cluster: tuple[SupervisorProcess, Backend]) -> None:
    process, _ = cluster
    text = httpx.get(f"{process.url}/metrics", timeout=5).text
    for name in ("tasks_queued_total", "tasks_done_total", "tasks_failed_total", "rate_limited"):
        assert f"fastagentic_{name}" in text
    assert "fastagentic_queue_pending" in text and 'instance_id="e2e"' in text


# Crash recovery --------------------------------------------------------------


def test_task_held_by_a_killed_worker_completes_elsewhere(tmp_path: Path) -> None:
    with backend() as slice_:
        env = {
            **slice_.env,
            "FASTAGENTIC_LLM_FAKE_TOKENS": "15",
            "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.1",
            "FASTAGENTIC_TASK_VISIBILITY_TIMEOUT": "1",
            "FASTAGENTIC_DB_POOL_SIZE": "1",
        }
        process = start(tmp_path, "--workers", "2", env=env)
        try:
            process.wait_serving(2, timeout=15)
            accepted = httpx.post(f"{process.url}/agent", json={"prompt": "slow"}, timeout=5)
            task_id = accepted.json()["task_id"]

            def holder() -> int | None:
                rows = slice_.query("SELECT status, worker FROM {schema}.agent_tasks")
                if rows and rows[0]["status"] == "running":
                    return int(rows[0]["worker"].rsplit("-", 1)[1])
                return None

            victim = wait_for(holder, 10, message="the task is running")
            assert victim in process.children()
            os.kill(victim, signal.SIGKILL)
            result = wait_finished(process.url, task_id, timeout=20)
        finally:
            process.stop()
        assert result["status"] == "done" and result["attempts"] == 2
        [row] = slice_.query("SELECT worker FROM {schema}.agent_tasks")
        assert row["worker"] != f"e2e-{victim}"
        assert "reclaimed task" in process.log()


# Readiness and fail-fast ------------------------------------------------------


class Proxy:
    """A TCP forwarder the test can cut, to take Redis away from a running service."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_ready_is_503_naming_redis_when_it_goes_away(tmp_path: Path) -> None:
    with backend() as slice_:
        proxy = Proxy(("127.0.0.1", 6379))
        env = {
            **slice_.env,
            "FASTAGENTIC_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "FASTAGENTIC_READY_TIMEOUT": "1",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT": "1",
        }
        process = start(tmp_path, "--workers", "1", env=env)
        try:
            process.wait_serving(1, timeout=15)
            assert process.get("/ready").status_code == 200
            proxy.close()
            response = process.get("/ready")
            assert response.status_code == 503
            body = response.json()
            assert body["ready"] is False
            assert body["checks"] == {"app": True, "redis": False, "postgres": True}
            assert body["message"].startswith("Not ready: redis")
            assert process.get("/health").status_code == 200  # liveness is not readiness
            queued = httpx.post(f"{process.url}/agent", json={"prompt": "p"}, timeout=10)
            assert queued.status_code == 503 and "error_id" in queued.json()
        finally:
            process.stop()
            proxy.close()


def test_unreachable_database_fails_fast_with_one_line(tmp_path: Path) -> None:
    closed = free_port()
    env = {"FASTAGENTIC_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/test"}
    process = start(tmp_path, "--workers", "2", env=env)
    try:
        assert process.wait_exit(15) == 3
    finally:
        process.stop()
    log = process.log()
    assert f"Cannot reach Postgres at postgresql://postgres@127.0.0.1:{closed}/test" in log
    assert "Traceback" not in log


def test_bad_setting_fails_fast_with_one_line(tmp_path: Path) -> None:
    process = start(tmp_path, "--workers", "2", env={"FASTAGENTIC_REDIS_POOL_SIZE": "0"})
    try:
        assert process.wait_exit(15) == 3
    finally:
        process.stop()
    log = process.log()
    assert "Invalid configuration: FASTAGENTIC_REDIS_POOL_SIZE='0': Expected `int` >= 1" in log
    assert "Traceback" not in log


# Streams end cleanly on drain -----------------------------------------------


class Stream:
    """POST /agent/stream read line by line in a thread, so the test can signal meanwhile."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.status = 0
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        try:
            body = {"prompt": "a long answer"}
            with httpx.stream("POST", f"{url}/agent/stream", json=body, timeout=30) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    self.lines.append(line)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    def tokens(self) -> int:
        return sum('"token"' in line for line in self.lines)

    def wait(self, timeout: float) -> None:
        assert self.finished.wait(timeout), f"stream still open: {self.lines[-5:]}"
        assert self.error is None, repr(self.error)


SLOW_STREAM = {"FASTAGENTIC_LLM_FAKE_TOKENS": "400", "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.05"}


def _assert_reconnected(stream: Stream) -> None:
    assert stream.status == 200
    events = "\n".join(stream.lines).strip().split("\n\n")
    assert events[-1].startswith("event: reconnect\nretry: 1000\ndata: "), events[-1]
    assert '"reason":"draining"' in events[-1]
    assert stream.tokens() < 400


def test_stream_gets_a_reconnect_event_when_its_worker_is_terminated(tmp_path: Path) -> None:
    process = start(tmp_path, "--workers", "1", env=SLOW_STREAM)
    try:
        [worker] = process.wait_serving(1, timeout=15)
        stream = Stream(process.url)
        wait_for(lambda: stream.tokens() >= 3, 10, message="tokens flowing")
        started = time.monotonic()
        os.kill(worker, signal.SIGTERM)
        stream.wait(5)
        assert time.monotonic() - started < 3
        _assert_reconnected(stream)
        exited = re.compile(rf"Worker {worker} (?:stopped|died)\b.*exited with code 0")
        wait_for(lambda: exited.search(process.log()), 10, message="clean worker exit")
        process.wait_serving(1, timeout=15)  # replaced; the client can reconnect
        assert process.get("/health").status_code == 200
    finally:
        process.stop()


def test_stream_reconnects_when_the_supervisor_shuts_down(tmp_path: Path) -> None:
    process = start(tmp_path, "--workers", "2", env=SLOW_STREAM)
    try:
        process.wait_serving(2, timeout=15)
        stream = Stream(process.url)
        wait_for(lambda: stream.tokens() >= 3, 10, message="tokens flowing")
        process.signal(signal.SIGTERM)
        stream.wait(5)
        _assert_reconnected(stream)
        assert process.wait_exit(10) == 0
    finally:
        process.stop()


# The launcher, on each server ---------------------------------------------------


@contextlib.contextmanager
def launched(tmp: Path, *args: str) -> Iterator[str]:
    port = free_port()
    log = (tmp / f"launch-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **SLOW_STREAM},
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp / f"launch-{port}.log").read_text())
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            return False

        wait_for(up, 20, interval=0.1, message="launched server serving")
        yield url
        # Graceful stop: TERM the server (the launcher exec'd into it).
        stream = Stream(url)
        wait_for(lambda: stream.tokens() >= 2, 10, message="tokens flowing")
        proc.send_signal(signal.SIGTERM)
        stream.wait(10)
        _assert_reconnected(stream)
        proc.wait(15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)
        log.close()


@pytest.mark.parametrize("server", ["supervisor", "uvicorn", "gunicorn"])
def test_launcher_passes_options_to_the_workers(tmp_path: Path, server: str) -> None:
    args = ["--server", server, "--workers", "2", "--redis-pool-size", "3", "--instance-id", "L1"]
    with launched(tmp_path, *args, "--db-pool-size", "4", "--timeout-graceful", "20") as url:
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.json()["instance_id"] == "L1"
        assert health.headers["x-fastagentic-instance"] == "L1"
        config = httpx.get(f"{url}/metrics", headers={"accept": "application/json"}, timeout=5)
        shown = config.json()["config"]
        assert (shown["redis_pool_size"], shown["db_pool_size"], shown["workers"]) == (3, 4, 2)
        assert shown["timeout_graceful"] == 20.0
