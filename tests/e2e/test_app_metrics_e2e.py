"""The app's own prometheus_client metrics, pooled by the supervisor, exact across faults.

Real supervisor, real workers, real HTTP; the scrape is parsed with
prometheus_client's own parser.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, free_port, wait_for

APP = "tests.apps.prom_app:app"
PER_REQUEST = 3  # /hit?n=3: three increments of the labelled counter per request
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def hits(samples: Samples) -> float:
    return samples.get(("app_hits_total", (("route", "hit"),)), 0.0)


def restarts(samples: Samples, reason: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "supervisor_worker_restarts_total" and ("reason", reason) in labels
    )


def pid_series(samples: Samples, name: str) -> set[int]:
    return {int(dict(labels)["pid"]) for (n, labels), _ in samples.items() if n == name}


class Load:
    """``threads`` clients sending /hit until ``count`` requests were answered."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url, self.threads = url, threads
        self.answered = 0
        self.sent = 0
        self.failed: list[str] = []
        self.last_pid = 0
        self.lock = threading.Lock()

    def run(self, count: int, during: Callable[[], None] | None = None) -> None:
        target = self.sent + count

        def client() -> None:
            with httpx.Client(base_url=self.url, timeout=20) as http:
                while True:
                    with self.lock:
                        if self.sent >= target:
                            return
                        self.sent += 1
                    try:
                        response = http.get(f"/hit?n={PER_REQUEST}")
                    except httpx.HTTPError as exc:
                        with self.lock:
                            self.failed.append(repr(exc))
                        continue
                    with self.lock:
                        if response.status_code == 200:
                            self.answered += 1
                            self.last_pid = int(response.text)
                        else:
                            self.failed.append(str(response.status_code))

        workers = [threading.Thread(target=client) for _ in range(self.threads)]
        for thread in workers:
            thread.start()
        if during is not None:
            during()
        for thread in workers:
            thread.join(120)


class Scraper:
    """Scrapes all along; remembers whether the pooled counter ever went backwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            samples = scrape(self.url)
            count = samples.get(("app_latency_seconds_count", ()), 0.0)
            self.seen.append((hits(samples), count))

    def backwards(self) -> list[tuple[float, float]]:
        return [(a, b) for a, b in zip(self.seen, self.seen[1:], strict=False) if b < a]


def _reasons(samples: Samples) -> set[str]:
    return {
        dict(labels)["reason"]
        for (name, labels), value in samples.items()
        if name == "supervisor_worker_restarts_total" and value > 0
    }


def _quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=70)


def unmarked(sup: SupervisorProcess, preferred: int) -> int:
    """A serving worker the supervisor has not marked for recycling, ``preferred`` if it
    is one. Called with no load running: a worker's --max-requests notice that was in
    flight has arrived a moment later, and nothing new can reach the limit."""
    time.sleep(0.3)
    log = sup.log()
    candidates = sorted(pid for pid in sup.serving_pids() if f"Recycling worker {pid} (" not in log)
    assert candidates, log
    return preferred if preferred in candidates else candidates[0]


def start(
    start_supervisor: StartSupervisor, *extra: str, env: dict[str, str] | None = None
) -> tuple[SupervisorProcess, str]:
    port = free_port()
    sup = start_supervisor(APP, "--metrics-bind", f"127.0.0.1:{port}", *extra, env=env)
    return sup, f"http://127.0.0.1:{port}/metrics"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pooled_counter_is_exact_across_recycles_kills_and_rolls(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup, metrics_url = start(
        start_supervisor,
        "-w",
        "4",
        "--max-requests",
        "300",
        "--max-memory",
        "200MiB",
        "--timeout-worker",
        "5",
        "--metrics-pid-label",
    )
    sup.wait_serving(4)
    load, scraper = Load(sup.url), Scraper(metrics_url)
    scraper.thread.start()
    try:
        load.run(1500)
        # SIGKILL a worker that just answered; one already recycling (it passed
        # --max-requests during the load) would be counted as that, not as a crash.
        victim = unmarked(sup, load.last_pid)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in sup.children(), 10, message="killed worker reaped")
        wait_for(lambda: "died" in sup.log() or "killed by SIGKILL" in sup.log(), 10)
        after_kill = scrape(metrics_url)
        # Its live-only gauge is gone at once; its counts are not.
        assert victim not in pid_series(after_kill, "app_worker_pid")
        assert hits(after_kill) == PER_REQUEST * load.answered

        load.run(1000)
        # Over --max-memory: a graceful recycle. The worker that grows must not be one
        # already recycling for --max-requests (it would leave for that reason).
        for _ in range(5):
            grown = int(sup.get("/grow?mb=260").text)
            if unmarked(sup, grown) == grown:
                break
        wait_for(lambda: f"Recycling worker {grown} (memory" in sup.log(), 15, message=sup.log())
        load.run(500)
        # A blocked event loop: the supervisor kills that worker (--timeout-worker).
        mark = tmp_path / "blocked"
        blocked = threading.Thread(target=lambda: _quietly(f"{sup.url}/block?s=60&mark={mark}"))
        blocked.start()
        # Load from now on: a connection the blocked worker had accepted first would be
        # cut by its kill (that request is lost with the worker; the test is about counts).
        wait_for(mark.exists, 10, message="the /block request reached a worker")
        load.run(500)
        wait_for(lambda: "timeout" in _reasons(scrape(metrics_url)), 30, message=sup.log())
        blocked.join(30)
        load.run(1500, during=lambda: sup.signal(signal.SIGHUP))
    finally:
        scraper.stop.set()
        scraper.thread.join(30)

    def settled() -> Samples | None:
        samples = scrape(metrics_url)
        live = sup.children()
        gauges = pid_series(samples, "app_worker_pid")
        return samples if gauges == live and len(live) == 4 else None

    samples = wait_for(settled, 30, interval=0.2, message="live gauges = live workers")
    assert load.failed == []
    assert load.answered == 5000
    assert hits(samples) == PER_REQUEST * 5000
    assert samples[("app_latency_seconds_count", ())] == 5000
    assert samples[("app_latency_seconds_bucket", (("le", "0.1"),))] == 5000
    assert samples[("app_sizes_count", ())] == 5000
    assert samples[("app_live_workers", ())] == 4  # livesum: dead workers left at once
    assert restarts(samples, "max-requests") >= 4
    assert restarts(samples, "memory") >= 1
    assert restarts(samples, "crash") >= 1
    assert restarts(samples, "reload") >= 4
    assert restarts(samples, "timeout") >= 1
    assert scraper.seen and scraper.backwards() == []
    assert ("app_phase", (("app_phase", "running"),)) in samples
    assert samples[("app_build_info", (("version", "1.2.3"),))] == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_300_recycles_leave_no_growth(start_supervisor: StartSupervisor) -> None:
    sup, metrics_url = start(start_supervisor, "-w", "2", "--max-requests", "1")
    sup.wait_serving(2)
    supervisor = psutil.Process(sup.pid)
    sent = 0

    def recycle_until(recycled: int) -> Samples:
        nonlocal sent
        with httpx.Client(base_url=sup.url, timeout=20, headers={"Connection": "close"}) as http:
            while True:
                samples = scrape(metrics_url)
                if restarts(samples, "max-requests") >= recycled:
                    break
                assert http.get(f"/hit?n={PER_REQUEST}").status_code == 200
                sent += 1
        # Every worker that answered is gone or counted: wait for the pool to settle.
        wait_for(lambda: len(sup.children()) == 2, 30, message="two workers again")
        return samples

    first = recycle_until(50)
    fds, rss = supervisor.num_fds(), supervisor.memory_info().rss
    recycle_until(300)

    def counted() -> Samples | None:
        got = scrape(metrics_url)
        return got if hits(got) == PER_REQUEST * sent else None

    samples = wait_for(counted, 10, message=f"{sent} requests counted")
    assert samples[("app_latency_seconds_count", ())] == sent
    assert restarts(samples, "max-requests") >= 300
    assert {key for key in samples if key[0].startswith("app_")} == {
        key for key in first if key[0].startswith("app_")
    }  # no series per dead worker
    # A worker still draining holds its pipes and its metrics area for a moment: once
    # the pool has settled, the supervisor is back to what it held after 50 recycles.
    wait_for(lambda: supervisor.num_fds() <= fds + 2, 10, message="fds back to the baseline")
    assert supervisor.memory_info().rss - rss < 2 << 20


def test_preloaded_metrics_are_pooled_and_start_from_zero_in_each_worker(
    start_supervisor: StartSupervisor,
) -> None:
    sup, metrics_url = start(start_supervisor, "-w", "3", "--preload")
    sup.wait_serving(3)
    with httpx.Client(base_url=sup.url, timeout=10, headers={"Connection": "close"}) as http:
        for _ in range(60):
            assert http.get(f"/hit?n={PER_REQUEST}").status_code == 200
    samples = scrape(metrics_url)
    assert hits(samples) == PER_REQUEST * 60
    assert samples[("app_latency_seconds_count", ())] == 60
    assert samples[("app_live_workers", ())] == 3


def test_an_apps_multiproc_dir_is_left_empty(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    sup, metrics_url = start(start_supervisor, "-w", "2", env=env)
    sup.wait_serving(2)
    for _ in range(20):
        assert sup.get(f"/hit?n={PER_REQUEST}", headers={"Connection": "close"}).status_code == 200
    assert hits(scrape(metrics_url)) == PER_REQUEST * 20
    assert list(directory.iterdir()) == []


def test_openmetrics_by_content_negotiation(start_supervisor: StartSupervisor) -> None:
    sup, metrics_url = start(start_supervisor, "-w", "1")
    sup.wait_serving(1)
    sup.get("/hit")
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    response = httpx.get(metrics_url, headers=accept, timeout=10)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert 'app_hits_total{route="hit"} 1.0' in response.text
    plain = httpx.get(metrics_url, timeout=10)
    assert plain.headers["content-type"].startswith("text/plain")


def test_an_app_without_prometheus_client_does_not_import_it(
    start_supervisor: StartSupervisor,
) -> None:
    port = free_port()
    sup = start_supervisor("tests.apps.plain:app", "-w", "1", "--metrics-bind", f"127.0.0.1:{port}")
    sup.wait_serving(1)
    assert sup.get("/").text == "no"
    assert "supervisor_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    time.sleep(0.1)
    assert sup.get("/").text == "no"
