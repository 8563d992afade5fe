"""The Markdown tables of a run: throughput at defaults and at equal features, cost, the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.cells import ANCHOR, OLD_PROFILE, Cell, profile_of, ratio

Column = tuple[str, Callable[[list[Cell], Cell], Any]]
EQUAL = ("access-log", "bare", "production")  # the rows of the equal-features table


def _metric(name: str, digits: int = 1) -> Callable[[list[Cell], Cell], Any]:
    def get(cells: list[Cell], cell: Cell) -> Any:
        found = cell["median"].get(name)
        if isinstance(found, float):
            return f"{found:,.{digits}f}"
        return "" if found is None else f"{found:,}" if isinstance(found, int) else found

    return get


def _ratio(name: str, server: str = ANCHOR, profile: str | None = None,
           digits: int = 2) -> Callable[[list[Cell], Cell], Any]:  # fmt: skip
    def get(cells: list[Cell], cell: Cell) -> Any:
        if cell["server"] == server and profile_of(cell) == (profile or profile_of(cell)):
            return ""
        found = ratio(cells, cell, name, server, profile)
        return "" if found is None else f"{found:.{digits}f}x"

    return get


def _runs(name: str) -> Callable[[list[Cell], Cell], Any]:
    def get(cells: list[Cell], cell: Cell) -> Any:
        return " ".join(str(run.get(name)) for run in cell["runs"])

    return get


def _errors(cells: list[Cell], cell: Cell) -> str:
    kinds = ("connect", "read", "write", "timeout", "non2xx")
    totals = dict.fromkeys(kinds, 0)
    for run in cell["runs"]:
        for kind in kinds:
            totals[kind] += run.get("load", {}).get("errors", {}).get(kind, 0)
    return " ".join(f"{kind} {n}" for kind, n in totals.items() if n) or "none"


_LOAD = [("p50 ms", _metric("p50_ms", 2)), ("p99 ms", _metric("p99_ms", 2)),
         ("failed", _metric("failed")),
         ("log lines / request", _metric("log_lines_per_request", 2)),
         ("master CPU % of workers'", _metric("master_cpu_pct", 2))]  # fmt: skip
DEFAULTS: list[Column] = [("req/s", _metric("rps", 0)), ("x gunicorn", _ratio("rps")), *_LOAD]
EQUAL_FEATURES: list[Column] = [
    ("req/s", _metric("rps", 0)),
    ("x gunicorn --access-logfile -", _ratio("rps", ANCHOR, "access-log")),
    ("x ours bare", _ratio("rps", "supervisor", "bare", 3)),
    *_LOAD,
]
COST: list[Column] = [
    ("first 200 ms", _metric("startup_ms")), ("x gunicorn", _ratio("startup_ms")),
    ("master RSS MiB", _metric("master_rss_mib")), ("x gunicorn", _ratio("master_rss_mib")),
    ("master PSS MiB", _metric("master_pss_mib")),
    ("PSS master + workers MiB", _metric("total_pss_mib")), ("x gunicorn", _ratio("total_pss_mib")),
    ("idle CPU % (master)", _metric("idle_cpu_pct", 3)),
    ("under load: master CPU % of workers'", _metric("load_master_cpu_pct", 3)),
    ("master CPU ms under load", _metric("load_master_cpu_ms")), ("starts", _runs("rep")),
]  # fmt: skip
TABLES: dict[str, list[Column]] = {
    "hello": DEFAULTS,
    "agent": [("req/s", _metric("rps", 0)), ("x gunicorn", _ratio("rps")),
              ("p50 ms", _metric("p50_ms", 2)), ("p99 ms", _metric("p99_ms", 2)),
              ("202 accepted", _metric("accepted")), ("200 results", _metric("results")),
              ("failed", _metric("failed"))],
    "restart": [("failed (median)", _metric("failed")), ("failed per run", _runs("failed")),
                ("errors, all runs", _errors), ("rolls done", _runs("rolls_completed")),
                ("roll s", _runs("roll_s")), ("req/s", _metric("rps", 0))],
    "recycle": [("failed (median)", _metric("failed")), ("failed per run", _runs("failed")),
                ("errors, all runs", _errors), ("recycles", _metric("recycles")),
                ("req/s", _metric("rps", 0))],
    "kill": [("failed (median)", _metric("failed")), ("failed per run", _runs("failed")),
             ("errors, all runs", _errors), ("back to N workers, ms", _metric("recovery_ms")),
             ("respawned", _metric("respawned")), ("master exited", _metric("master_exited"))],
    "memory": [("master RSS MiB", _metric("master_rss_mib")),
               ("x gunicorn", _ratio("master_rss_mib")),
               ("master PSS MiB", _metric("master_pss_mib")),
               ("workers RSS MiB", _metric("workers_rss_mib")),
               ("workers USS MiB", _metric("workers_uss_mib")),
               ("workers PSS MiB", _metric("workers_pss_mib")),
               ("all processes RSS MiB", _metric("total_rss_mib")),
               ("processes", _metric("processes"))],
    "lifecycle": [("start-up ms", _metric("startup_ms")), ("x gunicorn", _ratio("startup_ms")),
                  ("all workers ms", _metric("all_workers_ms")),
                  ("SIGTERM -> exit ms", _metric("shutdown_ms")),
                  ("in-flight got 200", _metric("inflight_ok")), ("exit code", _runs("exit_code")),
                  ("left running", _metric("left_running"))],
    "cost": COST,
}  # fmt: skip


def table(cells: list[Cell], rows: list[Cell], columns: list[Column], title: str) -> list[str]:
    if not rows:
        return []
    lines = ["", f"## {title}", ""]
    lines.append("| server | workers | " + " | ".join(head for head, _ in columns) + " |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for cell in rows:
        if cell["na"]:
            values = [f"n/a: {cell['na']}"] + [""] * (len(columns) - 1)
        elif not cell["runs"]:
            why = " ".join("; ".join(cell["errors"]).split())[:160].replace("|", "/")
            values = [f"failed: {why}"] + [""] * (len(columns) - 1)
        else:
            values = [str(get(cells, cell)) for _, get in columns]
        lines.append(f"| {cell['label']} | {cell['workers']} | " + " | ".join(values) + " |")
    return lines


def tracked(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    lines = ["", "## Tracked ratios (hello req/s; medians of one run, servers taking turns)", ""]
    lines += ["| ratio | workers | numerator req/s | denominator req/s | ratio | target | met |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for entry in entries:
        top, bottom = entry["numerator"]["rps"], entry["denominator"]["rps"]
        measured = "n/a" if entry["value"] is None else f"{entry['value']:.3f}"
        met = "n/a" if entry["met"] is None else "yes" if entry["met"] else "NO"
        lines.append(f"| {entry['ratio']} | {entry['workers']} | {_num(top)} | {_num(bottom)} "
                     f"| {measured} | >= {entry['target']} | {met} |")  # fmt: skip
    return lines


def _num(found: float | None) -> str:
    return "n/a" if found is None else f"{found:,.0f}"


def throughput(results: dict[str, Any]) -> list[str]:
    cells = results["cells"]
    hello = [cell for cell in cells if cell["scenario"] == "hello"]
    title = results["meta"]["scenarios"].get("hello", "hello")
    lines = table(
        cells,
        [c for c in hello if profile_of(c) == "default"],
        DEFAULTS,
        f"Throughput at defaults (each server as a user first runs it): {title}",
    )
    lines += table(
        cells,
        [c for c in hello if profile_of(c) in EQUAL],
        EQUAL_FEATURES,
        "Throughput at equal features (access log on everywhere; ours bare and production beside)",
    )
    others = [c for c in hello if profile_of(c) not in ("default", *EQUAL)]
    for profile in dict.fromkeys(profile_of(c) for c in others):
        what = f"profile {profile!r}"
        if profile == OLD_PROFILE:
            what = "from before profiles (every access log off, log level warning)"
        rows = [c for c in others if profile_of(c) == profile]
        lines += table(cells, rows, DEFAULTS, f"Throughput, {what}: {title}")
    return lines


def cost(results: dict[str, Any]) -> list[str]:
    rows = [cell for cell in results["cells"] if cell["scenario"] == "cost"]
    meta = results["meta"]
    title = (f"Supervisor cost against gunicorn's arbiter (hello app, default profiles, median "
             f"of {meta.get('starts', '?')} interleaved starts; idle over "
             f"{meta.get('idle_seconds', '?')} s, load {meta['seconds']} s of wrk)")  # fmt: skip
    return table(results["cells"], rows, COST, title)


def scenarios(results: dict[str, Any]) -> list[str]:
    """The other scenarios, one table each, as they ran (each server's default profile)."""
    lines: list[str] = []
    for name, title in results["meta"]["scenarios"].items():
        if name not in ("hello", "cost") and name in TABLES:
            rows = [cell for cell in results["cells"] if cell["scenario"] == name]
            lines += table(results["cells"], rows, TABLES[name], title)
    return lines


def importtime(found: dict[str, Any]) -> list[str]:
    if not found:
        return []
    lines = ["", "## Import time of a real start (python -X importtime, the master until the "
             "first 200)", ""]  # fmt: skip
    for server, summary in found.items():
        if "error" in summary:
            lines.append(f"- {server}: failed: {summary['error']}")
            continue
        lines.append(f"- {server}: `{summary['command']}`: {summary['modules']} modules, "
                     f"{summary['total_ms']} ms of import time in the master; first 200 after "
                     f"{summary['first_200_ms']} ms (slower under -X importtime); "
                     f"top {len(summary['top_cumulative'])} in `{summary['summary']}`")  # fmt: skip
    ours = found.get("supervisor", {})
    if ours.get("top_cumulative"):
        lines += ["", "| ours: module | cumulative ms | self ms |", "|---|---|---|"]
        lines += [
            f"| {name} | {cum:.2f} | {own:.2f} |" for name, cum, own in ours["top_cumulative"]
        ]
    return lines


def commands(results: dict[str, Any]) -> list[str]:
    workers = results["meta"]["scenario_workers"]
    rows = [cell for cell in results["cells"]
            if cell.get("command") and cell["workers"] == workers
            and cell["scenario"] in ("hello", "cost")]  # fmt: skip
    if not rows:
        return []
    lines = ["", f"## Commands ({workers} workers; cwd loadtests/apps, the port free per run)", ""]
    lines += ["| scenario | server | profile | command |", "|---|---|---|---|"]
    seen = set()
    for cell in rows:
        key = (cell["scenario"], cell["server"], profile_of(cell))
        if key not in seen:
            seen.add(key)
            lines.append(f"| {key[0]} | {cell['label']} | {key[2]} | `{cell['command']}` |")
    defaults = results["meta"].get("defaults_chosen") or {}
    if defaults:
        lines += ["", "Loop and HTTP parser each server picks by default here:", ""]
        lines += [f"- {server}: {chosen}" for server, chosen in defaults.items()
                  if server in results["meta"]["servers"]]  # fmt: skip
    return lines
