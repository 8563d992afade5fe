"""loadtests/run.py: the wrk parser and medians, and one --quick run end to end (structure only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"

WRK_OUTPUT = """\
Running 8s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  412.00us  21.30ms   93.10%
    Req/Sec    55.01k     2.10k   60.12k    80.00%
  Latency Distribution
     50%    0.98ms
     75%    1.20ms
     90%    1.52ms
     99%    2.10s
  437904 requests in 8.00s, 62.23MB read
  Socket errors: connect 1, read 7, write 2, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  54737.95
Transfer/sec:      7.78MB
EXTRA accepted=12
EXTRA results=11
"""


def _bench() -> Any:
    if str(LOADTESTS) not in sys.path:
        sys.path.insert(0, str(LOADTESTS))
    import bench.load
    import bench.report

    return bench


def test_parse_wrk() -> None:
    result = _bench().load.parse_wrk(WRK_OUTPUT)
    assert result.requests == 437904
    assert result.seconds == 8.0
    assert result.rps == 54737.95
    assert result.latency_ms["p50"] == 0.98
    assert result.latency_ms["p99"] == 2100.0
    assert result.latency_ms["max"] == 21.3
    assert result.errors == {"connect": 1, "read": 7, "write": 2, "timeout": 3, "non2xx": 5}
    assert result.failed == 18
    assert result.extra == {"accepted": 12, "results": 11}


def test_parse_wrk_without_errors() -> None:
    text = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    result = _bench().load.parse_wrk(text)
    assert result.failed == 0


def test_medians() -> None:
    runs = [{"rps": 3.0, "ok": True, "roll_s": [1]}, {"rps": 1.0, "ok": False}, {"rps": 2.0}]
    medians = _bench().report.medians(runs)
    assert medians["rps"] == 2.0
    assert "roll_s" not in medians


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(LOADTESTS / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "latest.json").read_text())
    assert list(out.glob("run-*.json"))
    meta = results["meta"]
    assert {"cpu_count", "cpu_model", "kernel", "python"} <= set(meta["machine"])
    assert {"asgi-supervisor", "gunicorn", "uvicorn", "granian", "wrk"} <= set(meta["versions"])
    assert meta["quick"] is True
    assert meta["repeat"] == 1
    assert meta["workers"] == [2]
    assert "supervisor" in meta["servers"]
    expected = {"hello", "agent", "restart", "recycle", "kill", "memory", "lifecycle"}
    assert set(meta["scenarios"]) == expected
    cells = results["cells"]
    assert {cell["scenario"] for cell in cells} == expected
    for cell in cells:
        assert {"server", "label", "workers", "variant", "runs", "median", "na", "errors"} <= set(
            cell
        )
        assert cell["errors"] == [], cell
        assert cell["na"] or len(cell["runs"]) == 1, cell
    ours = {cell["scenario"]: cell for cell in cells if cell["label"] == "asgi-supervisor"}
    assert isinstance(ours["hello"]["median"]["rps"], float)
    assert {"p50_ms", "p99_ms", "failed"} <= set(ours["hello"]["median"])
    assert {"failed", "rolls_completed"} <= set(ours["restart"]["median"])
    assert {"failed", "recycles"} <= set(ours["recycle"]["median"])
    assert {"failed", "recovery_ms"} <= set(ours["kill"]["median"])
    assert {"master_rss_mib", "workers_rss_mib"} <= set(ours["memory"]["median"])
    assert {"startup_ms", "shutdown_ms", "inflight_ok"} <= set(ours["lifecycle"]["median"])
    markdown = (out / "latest.md").read_text()
    assert "## Targets" in markdown
    assert "| server | workers |" in markdown
    for name in ("throughput", "latency_p99", "restart_errors", "memory"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
