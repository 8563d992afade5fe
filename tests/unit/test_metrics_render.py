"""The supervisor's Prometheus text, rendered from a hand-made pool snapshot (no processes)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from supervisor.commands.wire import status_of
from supervisor.endpoints.metrics import render
from supervisor.pool import PoolSnapshot, Reason, StopMode, WorkerState, WorkerView


def view(pid: int, state: WorkerState, requests: int, **stats: float) -> WorkerView:
    return WorkerView(
        pid=pid,
        generation=2,
        state=state,
        age_s=12.5,
        requests=requests,
        in_flight=1,
        connections=3,
        rss_bytes=50_000_000,
        last_beat_s=0.4,
        retiring=Reason.MAX_REQUESTS if pid == 11 else None,
        leaving=Reason.RELOAD if state is WorkerState.DRAINING else None,
        stats=dict(stats),
        websockets=pid - 10,  # 1, 2 serving; 3 draining
        streams=1 if state is WorkerState.DRAINING else 0,
    )


SNAPSHOT = PoolSnapshot(
    pid=10,
    version="9.9",
    app="app.main:app",
    instance_id='pod-"a"',
    uptime_s=60.0,
    target=2,
    generation=2,
    stopping=StopMode.RUNNING,
    workers=(
        view(
            11,
            WorkerState.SERVING,
            40,
            responses_2xx=38,
            responses_5xx=2,
            duration_count=40,
            duration_sum=1.5,
            **{"duration_le_0.005": 30, "duration_le_0.1": 10},
        ),
        view(
            12,
            WorkerState.SERVING,
            10,
            responses_2xx=10,
            duration_count=10,
            duration_sum=0.2,
            **{"duration_le_0.005": 10},
        ),
        view(13, WorkerState.DRAINING, 5),
    ),
    restarts={"max-requests": 3, "crash": 1},
    exited_requests=100,
    exited_stats={
        "responses_2xx": 100,
        "duration_count": 100,
        "duration_sum": 2.0,
        "duration_le_0.005": 100,
        "rejected": 4,
    },
)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(render(SNAPSHOT)):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "instance_id"))
            found[(sample.name, labels)] = sample.value
    return found


def test_pool_counters_sum_live_and_exited_workers() -> None:
    got = samples()
    assert got[("supervisor_requests_total", ())] == 155
    assert got[("supervisor_responses_total", (("status", "2xx"),))] == 148
    assert got[("supervisor_responses_total", (("status", "5xx"),))] == 2
    assert got[("supervisor_request_duration_seconds_count", ())] == 150
    assert got[("supervisor_request_duration_seconds_bucket", (("le", "0.005"),))] == 140
    assert got[("supervisor_request_duration_seconds_bucket", (("le", "0.1"),))] == 150
    assert got[("supervisor_request_duration_seconds_bucket", (("le", "+Inf"),))] == 150
    assert got[("supervisor_concurrency_rejections_total", ())] == 4


def test_workers_by_state_restarts_by_reason_and_per_worker_gauges() -> None:
    got = samples()
    assert got[("supervisor_workers", (("state", "serving"),))] == 2
    assert got[("supervisor_workers", (("state", "draining"),))] == 1
    assert got[("supervisor_workers_target", ())] == 2
    assert got[("supervisor_worker_restarts_total", (("reason", "max-requests"),))] == 3
    assert got[("supervisor_worker_restarts_total", (("reason", "crash"),))] == 1
    assert got[("supervisor_worker_restarts_total", (("reason", "fd-limit"),))] == 0
    assert got[("supervisor_worker_rss_bytes", (("worker", "12"),))] == 50_000_000
    assert got[("supervisor_requests_in_flight", ())] == 3
    assert got[("supervisor_boot_failing", ())] == 0


def test_the_instance_label_is_escaped() -> None:
    assert 'instance_id="pod-\\"a\\""' in render(SNAPSHOT)


def test_status_is_built_from_the_same_snapshot() -> None:
    status = status_of(SNAPSHOT)
    assert status.totals.requests == 155 and status.totals.workers == 2
    assert [w.retiring for w in status.workers] == ["max-requests", None, None]
    assert status.stopping is None and status.version == "9.9"


def test_open_websockets_and_streams_by_worker_state() -> None:
    got = samples()
    assert got[("supervisor_open_websockets", (("state", "serving"),))] == 3
    assert got[("supervisor_open_websockets", (("state", "draining"),))] == 3
    assert got[("supervisor_open_streams", (("state", "serving"),))] == 0
    assert got[("supervisor_open_streams", (("state", "draining"),))] == 1
    status = status_of(SNAPSHOT)
    assert (status.totals.websockets, status.totals.streams) == (6, 1)
    assert [w.websockets for w in status.workers] == [1, 2, 3]
