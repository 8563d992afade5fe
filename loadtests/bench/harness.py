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

from bench import cost, plots, procs, report
from bench.load import wrk_version
from bench.scenarios import LOADTESTS, REPO, SCENARIOS, Context, NotApplicable, Scenario
from bench.servers import KINDS, PROFILES, Kind, Options, ServerFailed, defaults_chosen, version_of

# --quick runs the other scenarios for ours and the anchor only (hello: every server).
QUICK_SERVERS = ("supervisor", "gunicorn")
Key = tuple[str, str, int, str, str]  # scenario, server, workers, variant, profile


def parse_args(argv: list[str], doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="one short run per cell, 2 workers (< 90 s)")
    add("--servers", help="comma-separated: " + ",".join(KINDS))
    add("--scenarios", help="comma-separated: " + ",".join(SCENARIOS))
    add("--profiles", help="hello's profiles, comma-separated [" + ",".join(PROFILES) + "]")
    add("--workers", help="hello worker counts [1,2,4; quick: 2]")
    add("--scenario-workers", type=int, default=2, help="workers elsewhere [2]")
    add("--repeat", type=int, help="runs per cell [3; quick: 1]")
    add("--starts", type=int, help="runs per cell of the cost scenario [5; quick: 1]")
    add("--duration", type=float, help="seconds of load per run [8; quick: 1]")
    add("--fault-duration", type=float, help="seconds around faults [8; quick: 2]")
    add("--idle", type=float, help="seconds the master's idle CPU is measured [10; quick: 1]")
    add("--load", choices=("wrk", "python"), default="wrk", help="load generator")
    add("--out", type=Path, default=LOADTESTS / "results", help="results folder")
    add("--keep-logs", action="store_true", help="keep whole server logs (else head + tail)")
    add("--no-setup", action="store_true", help="use this interpreter as it is")
    add("--from-json", type=Path, help="only redo OUT's Markdown and plots from it")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.starts = args.starts or (1 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 8.0)
    args.fault_duration = args.fault_duration or (2.0 if args.quick else args.duration)
    args.idle = args.idle if args.idle is not None else (1.0 if args.quick else 10.0)
    args.warmup = 0.3 if args.quick else 1.0
    args.workers = [int(n) for n in (args.workers or ("2" if args.quick else "1,2,4")).split(",")]
    args.profiles = (args.profiles or ",".join(PROFILES)).split(",")
    if unknown := [name for name in args.profiles if name not in PROFILES]:
        parser.error(f"unknown profile(s) {unknown}; choose from {', '.join(PROFILES)}")
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
    names = ("asgi-supervisor", "gunicorn", "uvicorn-worker", "uvicorn", "granian", "hypercorn")
    found: dict[str, str | None] = {name: version_of(name) for name in names}
    for extra in ("uvloop", "httptools", "h11", "gunicorn-h1c"):
        found[extra] = version_of(extra)
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
        "profile": options.profile,
        "label": f"{kind.label_of(options.profile)} {variant}".strip(),
        "variant": variant,
        "workers": workers,
        "command": None,
        "same_as": "default" if kind.same_as_default(options.profile) else None,
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
        if not ctx.keep_logs:
            for log in ctx.server_logs:
                procs.compact_log(log)
        ctx.server_logs.clear()
    cell["command"] = cell["command"] or numbers.pop("command", None)
    numbers.pop("command", None)
    numbers.update(rep=rep + 1, loadavg=load1, wall_s=round(time.monotonic() - started, 2))
    cell["runs"].append(numbers)
    shown = {k: v for k, v in numbers.items() if k not in ("load", "rep", "loadavg")}
    print(f"  {cell['label']}: {shown}", flush=True)


def entries(
    scenario: Scenario, kinds: list[Kind], args: argparse.Namespace, rep: int
) -> list[tuple[Kind, str]]:
    """The (server, profile) pairs that take turns in one repetition, in this turn's order."""
    if args.quick and not args.servers and scenario.name != "hello":
        kinds = [kind for kind in kinds if kind.name in QUICK_SERVERS]
    profiles = args.profiles if scenario.profiled else ["default"]
    pairs = [(kind, profile) for profile in profiles for kind in kinds if kind.has(profile)]
    # A rotating order, so drift in the machine's load hits every server alike.
    shift = rep * len(pairs) // max(1, repeats(args, scenario)) if pairs else 0
    return pairs[shift:] + pairs[:shift]


def repeats(args: argparse.Namespace, scenario: Scenario) -> int:
    return int(args.starts if scenario.name == "cost" else args.repeat)


def estimate(args: argparse.Namespace, kinds: list[Kind], scenarios: list[Scenario]) -> float:
    """Rough seconds the run takes (start, warm-up and stop included)."""
    each = {
        "hello": args.duration + args.warmup + 1.5,
        "agent": args.duration + args.warmup + 4,
        "memory": args.warmup + 2,
        "lifecycle": 2.5,
        "cost": args.warmup + args.idle + args.duration + 2.5,
    }
    total = 0.0
    for scenario in scenarios:
        counts = len(args.workers) if scenario.per_worker_count else 1
        pairs = [pair for pair in entries(scenario, kinds, args, 0)
                 if not pair[0].same_as_default(pair[1])]  # fmt: skip
        seconds = each.get(scenario.name, args.fault_duration + 2.5)
        runs = counts * len(scenario.variants) * len(pairs) * repeats(args, scenario)
        granian = any(kind.name == "granian" for kind, _ in pairs)
        total += runs * seconds + (16 * repeats(args, scenario) if scenario.name == "restart"
                                   and granian else 0)  # fmt: skip
    return total


def repetition(
    ctx: Context,
    cells: dict[Key, dict[str, Any]],
    scenario: Scenario,
    *,
    kinds: list[Kind],
    args: argparse.Namespace,
    rep: int,
) -> None:
    """One run of ``scenario`` for every server and profile, at every worker count and variant."""
    counts = args.workers if scenario.per_worker_count else [args.scenario_workers]
    for workers in counts:
        for variant in scenario.variants:
            preload = "--preload" if variant.preload else ""
            print(f"[{rep + 1}/{repeats(args, scenario)}] {scenario.name} w={workers} {preload}",
                  flush=True)  # fmt: skip
            for kind, profile in entries(scenario, kinds, args, rep):
                options = Options(profile=profile, preload=variant.preload)
                key = (scenario.name, kind.name, workers, preload, profile)
                cell = cells.setdefault(key, new_cell(scenario, kind, workers, options))
                if cell["na"] is None and cell["same_as"] is None:
                    run_one(ctx, cell, scenario=scenario, kind=kind, workers=workers,
                            options=options, rep=rep)  # fmt: skip


def finish_cells(cells: dict[Key, dict[str, Any]], kinds: list[Kind]) -> list[dict[str, Any]]:
    """Medians; a profile that is some server's default shares that cell's runs."""
    for key, cell in cells.items():
        if cell["same_as"]:
            source = cells.get((*key[:4], cell["same_as"]))
            if source:
                cell.update(runs=source["runs"], na=source["na"], errors=source["errors"],
                            command=source["command"])  # fmt: skip
        cell["median"] = report.medians(cell["runs"])
    order_of = {kind.name: i for i, kind in enumerate(kinds)}
    profiles = {name: i for i, name in enumerate(PROFILES)}
    return sorted(
        cells.values(),
        key=lambda c: (list(SCENARIOS).index(c["scenario"]), c["workers"], c["variant"],
                       profiles[c["profile"]], order_of[c["server"]]),
    )  # fmt: skip


def meta(args: argparse.Namespace, kinds: list[Kind], scenarios: list[Scenario], raw: Path,
         tool: str) -> dict[str, Any]:  # fmt: skip
    return {
        "started": raw.name,
        "command": " ".join(["python", "loadtests/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "defaults_chosen": {k: v for k, v in defaults_chosen().items() if k in KINDS},
        "load_generator": f"wrk -t1 -c64 --latency ({wrk_version()})" if tool == "wrk"
        else "python asyncio client, 64 keep-alive connections",
        "servers": [kind.name for kind in kinds],
        "profiles": args.profiles,
        "scenarios": {s.name: s.title for s in scenarios},
        "workers": args.workers,
        "scenario_workers": args.scenario_workers,
        "repeat": args.repeat,
        "starts": args.starts,
        "seconds": args.duration,
        "fault_seconds": args.fault_duration,
        "idle_seconds": args.idle,
        "server_cwd": "loadtests/apps (PYTHONPATH too), without the server settings in the "
        "environment (SUPERVISOR_*, UVICORN_*, GRANIAN_*, GUNICORN_CMD_ARGS, WEB_CONCURRENCY)",
        "logs": "stdout and stderr of every server go to one file in raw/ per run",
        "raw": str(raw),
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds, scenarios, notes = plan(args)
    raw = args.out / "raw" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw.mkdir(parents=True, exist_ok=True)
    tool = args.load if args.load == "python" or shutil.which("wrk") else "python"
    if tool != args.load:
        notes.append("wrk is not installed: the bounded Python client made the load (client-bound)")
    ctx = Context(raw, args.duration, args.fault_duration, args.warmup, tool, args.idle,
                  keep_logs=args.keep_logs)  # fmt: skip
    if any(s.name == "agent" for s in scenarios):
        ctx.agent_skip = agent_skip(sys.executable)
        if ctx.agent_skip:
            notes.append(f"agent scenario skipped: {ctx.agent_skip}")
    results: dict[str, Any] = {"meta": meta(args, kinds, scenarios, raw, tool), "cells": [],
                               "notes": notes}  # fmt: skip
    cells: dict[Key, dict[str, Any]] = {}
    print(f"about {estimate(args, kinds, scenarios) / 60:.1f} min; logs in {raw}", flush=True)
    started = time.monotonic()
    try:
        for rep in range(max(repeats(args, scenario) for scenario in scenarios)):
            for scenario in scenarios:
                if rep < repeats(args, scenario):
                    repetition(ctx, cells, scenario, kinds=kinds, args=args, rep=rep)
        if any(s.name == "cost" for s in scenarios):
            print("import time of a real start (python -X importtime)", flush=True)
            results["importtime"] = cost.import_times(ctx, kinds, args.scenario_workers)
    except KeyboardInterrupt:
        notes.append("interrupted (Ctrl-C): the results are partial")
    results["cells"] = finish_cells(cells, kinds)
    results["ratios"] = report.ratios(results)
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
    for path in plots.plots(results, out):
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
    print(report.ratio_lines(results), flush=True)
