"""loadtests/run.py: its parsers, profiles and ratios, and one --quick run end to end."""

from __future__ import annotations

import json
import re
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

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:       300 |        300 | sitecustomize
[2026-12-01 09:25:14 +0000] [16886] [INFO] Starting supervisor
import time:      1500 |       4000 |     supervisor.config
import time:      2500 |       6500 |   supervisor.cli
"""


def _bench() -> Any:
    if str(LOADTESTS) not in sys.path:
        sys.path.insert(0, str(LOADTESTS))
    import bench.cost
    import bench.load
    import bench.procs
    import bench.report
    import bench.servers

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
    runs = [{"rps": 3.0, "ok": True, "roll_s": [1]}, {"rps": 1.0, "ok": False},
            {"rps": 2.0, "ok": True, "command": "x"}]  # fmt: skip
    medians = _bench().report.medians(runs)
    assert medians["rps"] == 2.0
    assert medians["ok"] == "2/3"
    assert "command" not in medians
    assert "roll_s" not in medians


def test_default_commands_are_what_a_user_types() -> None:
    servers = _bench().servers
    default = servers.Options()

    def argv(name: str, options: Any = default) -> list[str]:
        command: list[str] = servers.KINDS[name].command("hello:app", 8000, 2, options)
        return [Path(command[0]).name, *command[1:]]

    python = Path(sys.executable).name
    assert argv("supervisor") == [python, "-m", "supervisor", "hello:app", "-w", "2",
                                  "--host", "127.0.0.1", "--port", "8000"]  # fmt: skip
    assert argv("gunicorn") == ["gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
                                "-b", "127.0.0.1:8000", "hello:app"]  # fmt: skip
    assert argv("gunicorn-asgi") == ["gunicorn", "-k", "asgi", "-w", "2", "-b", "127.0.0.1:8000",
                                     "hello:app"]  # fmt: skip
    assert argv("uvicorn") == ["uvicorn", "hello:app", "--workers", "2", "--host", "127.0.0.1",
                               "--port", "8000"]  # fmt: skip
    assert argv("granian") == ["granian", "--interface", "asgi", "--workers", "2", "--host",
                               "127.0.0.1", "--port", "8000", "hello:app"]  # fmt: skip
    assert argv("hypercorn") == ["hypercorn", "-w", "2", "-b", "127.0.0.1:8000", "hello:app"]
    access = servers.Options(profile="access-log")
    assert argv("gunicorn", access)[-3:] == ["--access-logfile", "-", "hello:app"]
    assert argv("granian", access)[-2:] == ["--access-log", "hello:app"]
    assert argv("supervisor", servers.Options(profile="bare"))[-1] == "--no-access-log"
    production = argv("supervisor", servers.Options(profile="production"))
    assert " ".join(production).endswith(
        "--port 8000 --log-format json --max-concurrent 1000 --metrics-bind 127.0.0.1:0 "
        "--instance-id bench --slow-request-ms 500"
    )
    same = {name for name, kind in servers.KINDS.items() if kind.same_as_default("access-log")}
    assert same == {"supervisor", "uvicorn"}
    assert not servers.KINDS["gunicorn"].has("bare")


def _cell(server: str, profile: str, rps: float, scenario: str = "hello") -> dict[str, Any]:
    return {"scenario": scenario, "server": server, "profile": profile, "variant": "",
            "workers": 2, "label": server, "command": f"{server} {profile}", "na": None,
            "errors": [], "runs": [{"rps": rps}], "median": {"rps": rps}}  # fmt: skip


def test_tracked_ratios() -> None:
    cells = [_cell("supervisor", "default", 90.0), _cell("supervisor", "access-log", 90.0),
             _cell("supervisor", "bare", 100.0), _cell("supervisor", "production", 96.0),
             _cell("gunicorn", "default", 100.0)]  # fmt: skip
    results = {"meta": {"workers": [2], "scenarios": {"hello": ""}}, "cells": cells}
    found = {entry["ratio"]: entry for entry in _bench().report.ratios(results)}
    assert found["ours default / gunicorn+UvicornWorker default"]["value"] == 0.9
    assert found["ours default / gunicorn+UvicornWorker default"]["met"] is False
    assert found["ours production / ours bare"]["value"] == 0.96
    assert found["ours production / ours bare"]["met"] is True
    assert found["ours access log on / ours bare"]["met"] is False
    bare = found["ours bare / gunicorn+UvicornWorker default"]
    assert (bare["value"], bare["met"]) == (1.0, False)
    assert bare["numerator"]["command"] == "supervisor bare"


def test_parse_importtime() -> None:
    rows = _bench().cost.parse_importtime(IMPORTTIME.splitlines())
    assert rows == [(120, 120, 1, "_io"), (1500, 4000, 2, "supervisor.config"),
                    (2500, 6500, 1, "supervisor.cli")]  # fmt: skip


def test_compact_log(tmp_path: Path) -> None:
    procs = _bench().procs
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert procs.log_size(log) == (1000, log.stat().st_size)
    procs.compact_log(log, keep=10)
    lines = log.read_text().splitlines()
    assert lines[:2] == ["line 0", "line 1"]
    assert lines[-1] == "line 999"
    assert len(lines) == 21
    assert "980 of 1000 lines" in lines[10]


def _by(cells: list[dict[str, Any]], scenario: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["server"], c["profile"]): c for c in cells if c["scenario"] == scenario}


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
    printed_last = run.stdout[run.stdout.rindex("tracked ratios") :]
    # A quick run's ratio is noisy (above 1 at times): its presence is what is checked here.
    assert re.search(r"w=2 ours production / ours bare: \d\.\d{3} \(target >= ", printed_last)
    assert "master RSS <= gunicorn's arbiter" in printed_last
    results = json.loads((out / "latest.json").read_text())
    assert list(out.glob("run-*.json"))
    meta = results["meta"]
    assert {"cpu_count", "cpu_model", "kernel", "python"} <= set(meta["machine"])
    assert {"asgi-supervisor", "gunicorn", "uvicorn", "granian", "hypercorn"} <= set(
        meta["versions"]
    )
    assert (meta["quick"], meta["repeat"], meta["workers"]) == (True, 1, [2])
    assert meta["profiles"] == ["default", "access-log", "bare", "production"]
    expected = {"hello", "agent", "restart", "recycle", "kill", "memory", "lifecycle", "cost"}
    assert set(meta["scenarios"]) == expected
    cells = results["cells"]
    assert {cell["scenario"] for cell in cells} == expected
    for cell in cells:
        assert {"server", "profile", "label", "workers", "variant", "runs", "median", "na",
                "errors", "command"} <= set(cell)  # fmt: skip
        assert cell["errors"] == [], cell
        assert cell["na"] or len(cell["runs"]) == 1, cell
    hello = _by(cells, "hello")
    assert {("supervisor", p) for p in meta["profiles"]} | {("gunicorn", "default"),
            ("gunicorn", "access-log")} <= set(hello)  # fmt: skip
    assert hello[("supervisor", "access-log")]["same_as"] == "default"
    # The profiles really switch the access log: about one line per request, or none.
    lines = {key: cell["median"]["log_lines_per_request"] for key, cell in hello.items()}
    for key in (
        ("supervisor", "default"),
        ("supervisor", "production"),
        ("gunicorn", "access-log"),
    ):
        assert lines[key] >= 0.9, lines
    for key in (("supervisor", "bare"), ("gunicorn", "default")):
        assert lines[key] < 0.1, lines
    assert "--no-access-log" in hello[("supervisor", "bare")]["command"]
    ours = hello[("supervisor", "default")]["median"]
    assert isinstance(ours["rps"], float)
    assert {"p50_ms", "p99_ms", "failed", "master_cpu_pct"} <= set(ours)
    ratios = [entry for entry in results["ratios"] if entry["workers"] == 2]
    assert len(ratios) == 4
    assert all(isinstance(entry["value"], float) for entry in ratios), ratios
    _check_other_scenarios(cells, results)
    markdown = (out / "latest.md").read_text()
    for heading in (
        "## Targets",
        "## Tracked ratios",
        "## Throughput at defaults",
        "## Throughput at equal features",
        "## Supervisor cost",
        "## Commands",
    ):
        assert heading in markdown  # fmt: skip
    for name in ("throughput", "throughput_equal", "latency_p99", "restart_errors", "memory",
                 "lifecycle", "supervisor_cost"):  # fmt: skip
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again"
    redo = [sys.executable, str(LOADTESTS / "run.py"), "--from-json", str(out / "latest.json")]
    subprocess.run([*redo, "--out", str(again)], check=True, capture_output=True, timeout=60)
    assert (again / "latest.md").read_text() == markdown


def _check_other_scenarios(cells: list[dict[str, Any]], results: dict[str, Any]) -> None:
    ours = {c["scenario"]: c["median"] for c in cells if c["server"] == "supervisor"
            and c["profile"] == "default" and not c["variant"]}  # fmt: skip
    assert {"failed", "rolls_completed"} <= set(ours["restart"])
    assert {"failed", "recycles"} <= set(ours["recycle"])
    assert {"failed", "recovery_ms"} <= set(ours["kill"])
    assert {"master_rss_mib", "workers_rss_mib"} <= set(ours["memory"])
    assert {"startup_ms", "shutdown_ms", "inflight_ok"} <= set(ours["lifecycle"])
    cost = _by(cells, "cost")
    assert set(cost) == {("supervisor", "default"), ("gunicorn", "default")}
    for cell in cost.values():
        figures = cell["median"]
        assert figures["startup_ms"] > 0
        assert figures["master_rss_mib"] > 0
        assert figures["total_pss_mib"] > figures["master_pss_mib"] > 0
        assert figures["idle_cpu_pct"] >= 0
        assert figures["load_workers_cpu_s"] > 0
    importtime = results["importtime"]["supervisor"]
    assert importtime["modules"] > 50, importtime
    assert any(name.startswith("supervisor") for name, _, _ in importtime["top_cumulative"])
    assert Path(importtime["summary"]).read_text().startswith("$ ")
