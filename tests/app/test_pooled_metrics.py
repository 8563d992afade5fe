"""The reference service's /metrics under the supervisor: every worker's counters, pooled."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.supervisor_process import SupervisorProcess, free_port, wait_for


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_app_metrics_are_pool_wide_on_both_ports(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = {**os.environ, "FASTAGENTIC_INSTANCE_ID": "pooled"}
    args = ["app.main:app", "-w", "3", "--metrics-bind", f"127.0.0.1:{metrics_port}"]
    sup = SupervisorProcess(tmp_path, args, env=env)
    try:
        pids = sup.wait_serving(3, timeout=30)
        with httpx.Client(base_url=sup.url, timeout=10, headers={"Connection": "close"}) as http:
            for _ in range(60):
                assert http.get("/health").status_code == 200
        os.kill(next(iter(pids)), signal.SIGKILL)  # its counts stay in the total
        wait_for(lambda: len(sup.serving_pids()) == 3 and len(sup.children()) == 3, 30)
        key = ("fastagentic_requests_total", (("instance_id", "pooled"),))
        page = httpx.get(f"{sup.url}/metrics", timeout=10).text
        assert samples(page)[key] == 60, page  # this request counts after its answer
        assert "worker_pid" not in page and "supervisor_requests_total" in page
        scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        assert scraped[key] == 61
        assert scraped[("fastagentic_requests_in_flight", (("instance_id", "pooled"),))] == 0
    finally:
        sup.stop()
