"""The run behind loadtests/run.py: plan the cells, run them interleaved, collect the medians."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.load import wrk_version
from bench.scenarios import LOADTESTS, REPO, SCENARIOS, Context, NotApplicable, Scenario
from bench.servers import KINDS, Kind, Options, ServerFailed, version_of


def parse_args(argv: list[str], doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short run per cell, 2 workers")
    parser.add_argument("--servers", help="comma-separated: " + ",".join(KINDS))
    parser.add_argument("--scenarios", help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--workers", help="hello worker counts [1,2,4; quick: 2]")
    parser.add_argument("--scenario-workers", type=int, default=2, help="workers elsewhere [2]")
    parser.add_argument("--repeat", type=int, help="runs per cell [3; quick: 1]")
    parser.add_argument("--duration", type=float, help="seconds of load per run [8; quick: 2]")
    parser.add_argument("--fault-duration", type=float, help="seconds around faults [8; quick: 3]")
    parser.add_argument("--load", choices=("wrk", "python"), default="wrk", help="load generator")
    parser.add_argument("--out", type=Path, default=LOADTESTS / "results", help="results folder")
    parser.add_argument("--no-setup", action="store_true", help="use this interpreter as it is")
    parser.add_argument("--from-json", type=Path, help="only redo OUT's Markdown and plots from it")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.fault_duration = args.fault_duration or (3.0 if args.quick else args.duration)
    args.warmup = 0.5 if args.quick else 1.0
    args.workers = [int(n) for n in (args.workers or ("2" if args.quick else "1,2,4")).split(",")]
    return args


# --- environment ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "hostname": socket.gethostname(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {
        name: version_of(name)
        for name in ("asgi-supervisor", "gunicorn", "uvicorn-worker", "uvicorn", "granian")
    }
    found.update(uvloop=version_of("uvloop"), httptools=version_of("httptools"))
    found["wrk"] = wrk_version()
    return found


def agent_skip(python: str) -> str | None:
    """Why the agent scenario cannot run here, or None."""
    probe = subprocess.run(
        [python, "-c", "import app.main"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"app.main cannot be imported ({last})"
    for name, port in (("Redis", 6379), ("Postgres", 5432)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return f"{name} is not reachable on 127.0.0.1:{port}"
    return None


# --- the run --------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> tuple[list[Kind], list[Scenario], list[str]]:
    notes: list[str] = []
    wanted = (args.servers or ",".join(KINDS)).split(",")
    kinds = []
    for name in wanted:
        if name not in KINDS:
            raise SystemExit(f"unknown server {name!r}; choose from {', '.join(KINDS)}")
        if KINDS[name].installed():
            kinds.append(KINDS[name])
        else:
            notes.append(f"{name} is not installed in {sys.executable}: left out")
    kinds.sort(key=lambda kind: list(KINDS).index(kind.name))
    names = (args.scenarios or ",".join(SCENARIOS)).split(",")
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return kinds, [SCENARIOS[name] for name in names], notes


def new_cell(scenario: Scenario, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    variant = "--preload" if options.preload else ""
    return {
        "scenario": scenario.name,
        "server": kind.name,
        "label": f"{kind.label} {variant}".strip(),
        "variant": variant,
        "workers": workers,
        "runs": [],
        "median": {},
        "na": None,
        "errors": [],
    }


def run_one(
    ctx: Context,
    cell: dict[str, Any],
    *,
    scenario: Scenario,
    kind: Kind,
    workers: int,
    options: Options,
    rep: int,
) -> None:
    started = time.monotonic()
    load1 = round(os.getloadavg()[0], 2)
    try:
        numbers = scenario.run(ctx, kind, workers, options)
    except NotApplicable as exc:
        cell["na"] = str(exc)
        print(f"  {cell['label']}: n/a ({exc})", flush=True)
        return
    except (ServerFailed, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        cell["errors"].append(f"run {rep + 1}: {type(exc).__name__}: {exc}"[:2000])
        print(f"  {cell['label']}: FAILED {type(exc).__name__}: {exc}", flush=True)
        return
    finally:
        procs.stop_all()
    numbers.update(rep=rep + 1, loadavg=load1, wall_s=round(time.monotonic() - started, 2))
    cell["runs"].append(numbers)
    shown = {k: v for k, v in numbers.items() if k not in ("load", "rep", "loadavg")}
    print(f"  {cell['label']}: {shown}", flush=True)


def estimate(args: argparse.Namespace, kinds: list[Kind], scenarios: list[Scenario]) -> float:
    """Rough seconds the run takes (start, warm-up and stop included)."""
    each = {
        "hello": args.duration + args.warmup + 2,
        "agent": args.duration + args.warmup + 4,
        "memory": args.warmup + 2,
        "lifecycle": 2.5,
    }
    total = 0.0
    for scenario in scenarios:
        counts = len(args.workers) if scenario.per_worker_count else 1
        seconds = each.get(scenario.name, args.fault_duration + 2.5)
        runs = counts * len(scenario.variants) * len(kinds)
        total += runs * seconds + (16 if scenario.name == "restart" and "granian" in
                                   [kind.name for kind in kinds] else 0)  # fmt: skip
    return total * int(args.repeat)


def repetition(
    ctx: Context,
    cells: dict[tuple[str, str, int, bool], dict[str, Any]],
    scenario: Scenario,
    *,
    order: list[Kind],
    args: argparse.Namespace,
    rep: int,
) -> None:
    """One run of ``scenario`` for every server, at every worker count and variant it has."""
    counts = args.workers if scenario.per_worker_count else [args.scenario_workers]
    for workers in counts:
        for options in scenario.variants:
            preload = "--preload" if options.preload else ""
            print(f"[{rep + 1}/{args.repeat}] {scenario.name} w={workers} {preload}", flush=True)
            for kind in order:
                key = (scenario.name, kind.name, workers, options.preload)
                cell = cells.setdefault(key, new_cell(scenario, kind, workers, options))
                if cell["na"] is None:
                    run_one(ctx, cell, scenario=scenario, kind=kind, workers=workers,
                            options=options, rep=rep)  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds, scenarios, notes = plan(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = args.out / "raw" / stamp
    raw.mkdir(parents=True, exist_ok=True)
    tool = args.load if args.load == "python" or shutil.which("wrk") else "python"
    if tool != args.load:
        notes.append("wrk is not installed: the bounded Python client made the load (client-bound)")
    ctx = Context(raw, args.duration, args.fault_duration, args.warmup, tool)
    if any(s.name == "agent" for s in scenarios):
        ctx.agent_skip = agent_skip(sys.executable)
        if ctx.agent_skip:
            notes.append(f"agent scenario skipped: {ctx.agent_skip}")
    results: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "command": " ".join(["python", "loadtests/run.py", *sys.argv[1:]]),
            "quick": args.quick,
            "machine": machine(),
            "versions": versions(),
            "load_generator": f"wrk -t1 -c64 --latency ({wrk_version()})" if tool == "wrk"
            else "python asyncio client, 64 keep-alive connections",
            "servers": [kind.name for kind in kinds],
            "scenarios": {s.name: s.title for s in scenarios},
            "workers": args.workers,
            "scenario_workers": args.scenario_workers,
            "repeat": args.repeat,
            "seconds": args.duration,
            "fault_seconds": args.fault_duration,
            "raw": str(raw),
        },
        "cells": [],
        "notes": notes,
    }  # fmt: skip
    cells: dict[tuple[str, str, int, bool], dict[str, Any]] = {}
    print(f"about {estimate(args, kinds, scenarios) / 60:.1f} min; logs in {raw}", flush=True)
    started = time.monotonic()
    try:
        for rep in range(args.repeat):
            # Servers take turns, in a rotating order, so drift in the machine's load hits all.
            order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)] if kinds else []
            for scenario in scenarios:
                repetition(ctx, cells, scenario, order=order, args=args, rep=rep)
    except KeyboardInterrupt:
        notes.append("interrupted (Ctrl-C): the results are partial")
    for cell in cells.values():
        cell["median"] = report.medians(cell["runs"])
    order_of = {kind.name: i for i, kind in enumerate(kinds)}
    results["cells"] = sorted(
        cells.values(),
        key=lambda c: (list(SCENARIOS).index(c["scenario"]), c["workers"], c["variant"],
                       order_of[c["server"]]),
    )  # fmt: skip
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    results["meta"]["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def write(results: dict[str, Any], out: Path, *, json_too: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if json_too:
        text = json.dumps(results, indent=2, default=str) + "\n"
        (out / f"run-{results['meta']['started']}.json").write_text(text)
        (out / "latest.json").write_text(text)
    (out / "latest.md").write_text(report.markdown(results))
    for path in report.plots(results, out):
        print(f"wrote {path}")
    print(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")


def main(argv: list[str], doc: str) -> None:
    args = parse_args(argv, doc)
    if args.from_json:
        write(json.loads(args.from_json.read_text()), args.out, json_too=False)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally below
    try:
        results = run(args)
    finally:
        procs.stop_all()
    write(results, args.out)
    print(report.markdown(results))
