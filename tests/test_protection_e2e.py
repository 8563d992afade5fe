"""Protection and observability end to end: limit, instance id, JSON logs, metrics, SIGUSR1."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartSupervisor
from tests.supervisor_process import free_port, wait_for

SEED_BODY = {
    "error": "Service temporarily unavailable",
    "message": "Too many concurrent requests",
    "retry_after": 1,
}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "instance_id"))
            samples[(sample.name, labels)] = sample.value
    return samples


def in_background(url: str, results: list[int]) -> threading.Thread:
    def run() -> None:
        results.append(httpx.get(url, timeout=20).status_code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_max_concurrent_answers_the_seed_503_and_health_bypasses(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "1", "--max-concurrent", "2")
    sup.wait_serving(1)
    results: list[int] = []
    marks = [tmp_path / f"mark{i}" for i in range(2)]
    threads = [in_background(f"{sup.url}/sleep?s=2&mark={m}", results) for m in marks]
    try:
        wait_for(lambda: all(m.exists() for m in marks), 10, message="two slow requests in flight")
        rejected = sup.get("/")
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "1"
        assert rejected.headers["content-type"] == "application/json"
        assert rejected.json() == SEED_BODY
        assert sup.get("/health").status_code == 200
    finally:
        for thread in threads:
            thread.join(20)
    assert results == [200, 200]
    assert sup.get("/").status_code == 200


def test_streams_count_until_they_end(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "-w", "1", "--max-concurrent", "1")
    sup.wait_serving(1)
    with httpx.stream("GET", f"{sup.url}/stream?n=3&s=0.5", timeout=10) as stream:
        chunks = stream.iter_bytes()
        first = next(chunks)
        assert first.startswith(b"0")
        assert sup.get("/").status_code == 503
        rest = b"".join(chunks)
    assert (first + rest).split() == [b"0", b"1", b"2"]
    assert sup.get("/").status_code == 200


def test_instance_id_header_default_and_configured(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app")
    sup.wait_serving(1)
    assert sup.get("/").headers["x-instance-id"] == f"{socket.gethostname()}-{sup.pid}"
    named = start_supervisor(
        "tests.apps.hello:app",
        "--instance-id",
        "pod-a",
        "--instance-header",
        "X-FastAgentic-Instance",
    )
    named.wait_serving(1)
    response = named.get("/")
    assert response.headers["x-fastagentic-instance"] == "pod-a"
    assert "x-instance-id" not in response.headers
    # A chosen id is on every text log line, the supervisor's and the workers'.
    lines = named.log().splitlines()
    assert lines and all("] [pod-a] [" in line for line in lines if line.startswith("["))
    assert f"[{sup.pid}] [" in sup.log() and f"-{sup.pid}]" not in sup.log()


def test_json_logs_and_request_ids(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(
        "tests.apps.hello:app", "--log-format", "json", "--instance-id", "inst-1"
    )
    sup.wait_serving(1)
    echoed = sup.get("/", headers={"X-Request-Id": "req-42"})
    assert echoed.headers["x-request-id"] == "req-42"
    generated = sup.get("/?q=1").headers["x-request-id"]
    assert len(generated) == 32

    def access_lines() -> list[dict[str, object]] | None:
        lines = [json.loads(line) for line in sup.log().splitlines() if line.strip()]
        access = [line for line in lines if line["logger"] == "supervisor.access"]
        return access if len(access) >= 2 else None

    access = wait_for(access_lines, 5, message="two access lines")
    first, second = access[0], access[1]
    assert first["request_id"] == "req-42"
    assert second["request_id"] == generated
    for line in (first, second):
        assert line["method"] == "GET" and line["path"] == "/" and line["status"] == 200
        assert isinstance(line["duration_ms"], float) and line["bytes"] > 0  # type: ignore[operator]
        assert line["instance_id"] == "inst-1"
        assert line["worker_pid"] == int(echoed.text)
        assert str(line["client"]).startswith("127.0.0.1:")
    for line in sup.log().splitlines():  # every line, supervisor and workers, is one object
        assert json.loads(line)["instance_id"] == "inst-1"


def test_slow_requests_and_loop_lag_are_warnings_with_the_path(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--slow-request-ms", "200")
    sup.wait_serving(1)
    assert sup.get("/sleep?s=0.3").status_code == 200
    assert sup.get("/block?s=0.5").status_code == 200
    wait_for(
        lambda: (
            "Slow request: GET /sleep took" in sup.log()
            and "Event loop lag:" in sup.log()
            and "(requests active: /block)" in sup.log()
        ),
        5,
        message=f"slow request and loop lag warnings\n{sup.log()}",
    )


def test_metrics_are_pooled_and_survive_recycling(start_supervisor: StartSupervisor) -> None:
    port = free_port()
    sup = start_supervisor(
        "tests.apps.hello:app",
        "-w",
        "2",
        "--max-requests",
        "7",
        "--metrics-bind",
        f"127.0.0.1:{port}",
        "--metrics-path",
        "/metrics",
    )
    sup.wait_serving(2)
    with httpx.Client(base_url=sup.url, timeout=10) as client:
        for _ in range(30):
            assert client.get("/", headers={"Connection": "close"}).status_code == 200
    metrics_url = f"http://127.0.0.1:{port}/metrics"

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(metrics_url)
        done = samples[("supervisor_requests_total", ())] >= 30
        recycled = samples[("supervisor_worker_restarts_total", (("reason", "max-requests"),))]
        return samples if done and recycled >= 2 else None

    samples = wait_for(settled, 15, interval=0.2, message="30 requests counted after recycles")
    assert samples[("supervisor_requests_total", ())] == 30
    assert samples[("supervisor_responses_total", (("status", "2xx"),))] == 30
    assert samples[("supervisor_request_duration_seconds_count", ())] == 30
    rss = [v for (name, _), v in samples.items() if name == "supervisor_worker_rss_bytes"]
    assert len(rss) >= 2
    assert samples[("supervisor_workers", (("state", "serving"),))] == 2
    assert samples[("supervisor_rss_bytes", ())] > 0
    # The same pooled view from any worker, on the app's own port.
    from_app = httpx.get(f"{sup.url}/metrics", timeout=5)
    assert from_app.status_code == 200
    assert "supervisor_requests_total" in from_app.text
    assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=5).status_code == 404


def test_metrics_bind_in_use_is_one_clear_line(start_supervisor: StartSupervisor) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = start_supervisor("tests.apps.hello:app", "--metrics-bind", f"127.0.0.1:{port}")
        assert sup.wait_exit(10) == 1
    assert f"--metrics-bind 127.0.0.1:{port}: Address already in use." in sup.log()
    assert "Traceback" not in sup.log()


def test_sigusr1_reopens_log_files(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    sup = start_supervisor("tests.apps.hello:app", "--log-file", str(log_file))
    wait_for(lambda: log_file.exists() and "serving" in log_file.read_text(), 10)
    rotated = tmp_path / "app.log.1"
    log_file.rename(rotated)
    sup.signal(signal.SIGUSR1)
    wait_for(lambda: log_file.exists() and "reopened its log files" in log_file.read_text(), 5)
    assert sup.get("/").status_code == 200
    wait_for(lambda: '"GET / HTTP/1.1" 200' in log_file.read_text(), 5, message="worker reopened")
    assert '"GET / HTTP/1.1"' not in rotated.read_text()
