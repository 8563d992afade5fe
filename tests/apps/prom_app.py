"""An app that uses prometheus_client the ordinary way (default registry, no changes).

GET /hit increments a labelled counter N times (?n=, default 1) and observes a
histogram; /gauge sets gauges in several multiprocess modes; /grow holds memory
(a --max-memory recycle); /block blocks the event loop (a --timeout-worker kill).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import Counter, Enum, Gauge, Histogram, Info, Summary

HITS = Counter("app_hits", "Hits by route", ["route"])
LATENCY = Histogram("app_latency_seconds", "Fake latency", buckets=(0.01, 0.1, 1.0))
SIZES = Summary("app_sizes", "Sizes")
LIVE = Gauge("app_live_workers", "1 per live worker", multiprocess_mode="livesum")
PIDS = Gauge("app_worker_pid", "pid per worker", multiprocess_mode="liveall")
MAXED = Gauge("app_max_seen", "max", multiprocess_mode="max")
TOTALS = Gauge("app_sum_kept", "sum incl. dead", multiprocess_mode="sum")
RECENT = Gauge("app_recent", "most recent", multiprocess_mode="mostrecent")
BUILD = Info("app_build", "Build")
PHASE = Enum("app_phase", "Phase", states=["starting", "running"])

_held: list[bytes] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                LIVE.inc()
                PIDS.set(os.getpid())
                BUILD.info({"version": "1.2.3"})
                PHASE.state("running")
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    path = scope["path"]
    body = str(os.getpid()).encode()
    if path == "/hit":
        for _ in range(int(query.get("n", ["1"])[0])):
            HITS.labels(route="hit").inc()
        LATENCY.observe(0.05)
        SIZES.observe(3)
    elif path == "/gauge":
        value = float(query.get("v", ["1"])[0])
        MAXED.set(value)
        TOTALS.inc(value)
        RECENT.set(value)
    elif path == "/block":
        if "mark" in query:  # a file the test waits for: the loop is blocked from now on
            Path(query["mark"][0]).touch()
        time.sleep(float(query.get("s", ["30"])[0]))  # blocks the event loop on purpose
    elif path == "/grow":
        _held.append(b"x" * (int(query.get("mb", ["100"])[0]) << 20))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
