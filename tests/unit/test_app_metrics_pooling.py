"""Pooling the app's metrics: the pure rules, the shared area, and the value class in a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from supervisor.appmetrics import area, pooling
from supervisor.appmetrics.harvest import Harvest


def series(
    typ: str, metric: str, mode: str = "", sample: str = "", **labels: str
) -> pooling.Series:
    return pooling.Series(typ, mode, metric, sample or metric, tuple(sorted(labels.items())), "h")


HITS = series("counter", "hits", sample="hits_total", route="a")
LIVE = series("gauge", "live", "livesum")
ALL = series("gauge", "each", "all")
MAX = series("gauge", "high", "max")
MIN = series("gauge", "low", "min")
KEPT = series("gauge", "kept", "sum")
RECENT = series("gauge", "recent", "mostrecent")
PHASE = series("stateset", "phase", phase="on")


def test_counters_sum_over_live_and_retired_and_live_gauges_leave_with_their_worker() -> None:
    retired = pooling.Retired()
    retired.retire({HITS: (5, 0), LIVE: (1, 0), ALL: (7, 0), KEPT: (2, 0), PHASE: (1, 9)})
    retired.retire({HITS: (4, 0), MAX: (9, 0), MIN: (3, 0), RECENT: (1, 50)})
    live = {
        100: {HITS: (1, 0), LIVE: (1, 0), ALL: (2, 0), MAX: (4, 0), MIN: (1, 0), RECENT: (8, 40)},
        101: {HITS: (2, 0), LIVE: (1, 0), ALL: (3, 0), KEPT: (1, 0), RECENT: (6, 60)},
    }
    pooled = pooling.pool(retired, live, pid_label=False)
    assert pooled[HITS][0] == 12
    assert pooled[LIVE][0] == 2  # only the two live workers
    assert pooled[ALL][0] == 5  # summed over live workers, the dead one's 7 gone
    assert pooled[MAX][0] == 9 and pooled[MIN][0] == 1
    assert pooled[KEPT][0] == 3
    assert pooled[RECENT][0] == 6  # the latest timestamp wins, dead or alive
    assert PHASE not in pooled  # Enum: live workers only
    assert retired.workers == 2


def test_pid_label_gives_all_and_liveall_one_series_per_live_worker() -> None:
    live = {100: {ALL: (2, 0), LIVE: (1, 0)}, 101: {ALL: (3, 0), LIVE: (1, 0)}}
    pooled = pooling.pool(pooling.Retired(), live, pid_label=True)
    each = {dict(s.labels)["pid"]: v[0] for s, v in pooled.items() if s.metric == "each"}
    assert each == {"100": 2, "101": 3}
    assert pooled[LIVE][0] == 2  # livesum stays a sum


def test_histogram_buckets_become_cumulative_with_a_count() -> None:
    def bucket(le: str) -> pooling.Series:
        return series("histogram", "lat", sample="lat_bucket", le=le)

    total = series("histogram", "lat", sample="lat_sum")
    live = {
        1: {bucket("0.1"): (2, 0), bucket("1.0"): (1, 0), bucket("+Inf"): (0, 0), total: (1, 0)},
        2: {bucket("0.1"): (1, 0), bucket("1.0"): (0, 0), bucket("+Inf"): (4, 0), total: (9, 0)},
    }
    (family,) = pooling.families(pooling.pool(pooling.Retired(), live, pid_label=False))
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got == {
        ("lat_bucket", "0.1"): 3,
        ("lat_bucket", "1.0"): 4,
        ("lat_bucket", "+Inf"): 8,
        ("lat_count", None): 8,
        ("lat_sum", None): 10,
    }


def test_an_area_round_trips_and_says_when_it_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(area, "CAPACITY", 4096)
    fd = area.create()
    try:
        shared = area.Area(fd)
        one = shared.slot(b"one")
        assert shared.slot(b"one") == one  # the same key, the same place
        shared.cells[one] = 2.5
        shared.cells[shared.slot(b"two") + 1] = 7.0
        assert area.read(fd) == [(b"one", 2.5, 0.0), (b"two", 0.0, 7.0)]
        with pytest.raises(area.AreaFull):
            shared.slot(b"x" * 5000)
    finally:
        os.close(fd)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from supervisor.appmetrics import values
    values.install(int(sys.argv[1]))
    from prometheus_client import Counter, Enum, Gauge, Histogram, Info
    hits = Counter("hits", "Hits", ["route"])
    for _ in range(1000):
        hits.labels("a").inc()
    Histogram("lat", "Latency", buckets=(0.1, 1.0)).observe(0.5)
    Gauge("live", "Live", multiprocess_mode="livesum").set(1)
    Info("build", "Build").info({"version": "2"})
    phase = Enum("phase", "Phase", states=["off", "on"])
    phase.state("on")
    child = os.fork()
    if child == 0:  # a process the app forks writes its own copy, not the worker's area
        for _ in range(5000):
            hits.labels("a").inc()
        phase.state("off")
        os._exit(0)
    os.waitpid(child, 0)
    os.kill(os.getpid(), signal.SIGKILL)  # nothing flushed, nothing closed
    """
)


def test_values_written_by_a_child_survive_its_sigkill() -> None:
    harvest = Harvest()
    fd = harvest.open()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(fd)], pass_fds=(fd,), check=False, timeout=30
    )
    assert child.returncode == -signal.SIGKILL
    harvest.adopt(child.returncode, fd)
    live = {(s.metric, s.sample, s.labels): v for s, (v, _) in harvest.pooled().items()}
    assert live[("hits", "hits_total", (("route", "a"),))] == 1000
    assert live[("lat", "lat_bucket", (("le", "1.0"),))] == 1
    assert live[("live", "live", ())] == 1
    assert live[("build", "build_info", (("version", "2"),))] == 1
    assert live[("phase", "phase", (("phase", "on"),))] == 1
    assert live[("phase", "phase", (("phase", "off"),))] == 0
    harvest.retire(child.returncode)
    retired = {s.metric: v for s, (v, _) in harvest.retired.values.items()}
    assert retired["hits"] == 1000 and "live" not in retired and "build" not in retired
    assert harvest.live == {}
