"""Results: medians per cell, the ratios the project tracks, and the Markdown report.

Every ratio is computed within one run from the medians of interleaved runs:
the numerator and the denominator took turns on the same machine minutes apart.
"""

from __future__ import annotations

from typing import Any

from bench import tables
from bench.cells import ANCHOR, Cell, divide, find, medians, value

__all__ = ["markdown", "medians", "ratio_lines", "ratios"]

# (name, numerator (server, profile), denominator (server, profile), target: ratio >= it)
TRACKED = (
    ("ours default / gunicorn+UvicornWorker default", ("supervisor", "default"),
     ("gunicorn", "default"), 1.0),
    ("ours production / ours bare", ("supervisor", "production"), ("supervisor", "bare"), 0.95),
    ("ours access log on / ours bare", ("supervisor", "access-log"), ("supervisor", "bare"), 0.95),
    ("ours bare / gunicorn+UvicornWorker default", ("supervisor", "bare"),
     ("gunicorn", "default"), 1.05),
)  # fmt: skip

# The supervisor's own cost (cost scenario): (what, metric, bound, "x" against the anchor or
# "abs" as it is, the most it may be).
COST_TARGETS = (
    ("first 200 after exec <= gunicorn's arbiter", "startup_ms", "x", 1.0),
    ("master RSS <= gunicorn's arbiter", "master_rss_mib", "x", 1.0),
    ("PSS of master + workers <= gunicorn's", "total_pss_mib", "x", 1.0),
    ("master idle CPU about zero (<= 0.1% of a CPU)", "idle_cpu_pct", "abs", 0.1),
    ("master CPU under load <= 1% of the workers'", "load_master_cpu_pct", "abs", 1.0),
)


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The tracked throughput ratios at every worker count, with both sides' commands."""
    cells: list[Cell] = results["cells"]
    found: list[dict[str, Any]] = []
    if "hello" not in results["meta"]["scenarios"]:
        return found
    for workers in results["meta"]["workers"]:
        for name, (top_server, top_profile), (bottom_server, bottom_profile), target in TRACKED:
            top = find(cells, "hello", top_server, workers, profile=top_profile)
            bottom = find(cells, "hello", bottom_server, workers, profile=bottom_profile)
            measured = divide(value(top, "rps"), value(bottom, "rps"))
            found.append({
                "ratio": name, "workers": workers, "value": measured, "target": target,
                "met": None if measured is None else measured >= target,
                "numerator": _side(top, top_server, top_profile),
                "denominator": _side(bottom, bottom_server, bottom_profile),
            })  # fmt: skip
    return found


def _side(cell: Cell | None, server: str, profile: str) -> dict[str, Any]:
    return {"server": server, "profile": profile, "rps": value(cell, "rps"),
            "runs": len(cell["runs"]) if cell else 0,
            "command": cell.get("command") if cell else None}  # fmt: skip


def cost_rows(cells: list[Cell], workers: int) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for the supervisor-cost targets; met is None when unknown."""
    ours = find(cells, "cost", "supervisor", workers)
    theirs = find(cells, "cost", ANCHOR, workers)
    rows: list[tuple[str, str, bool | None]] = []
    for what, metric, kind, bound in COST_TARGETS:
        mine = value(ours, metric)
        if kind == "x":
            measured = divide(mine, value(theirs, metric))
            text = (
                "n/a"
                if measured is None
                else f"{measured:.3f}x ({mine:g} vs {value(theirs, metric):g})"
            )
        else:
            measured, text = mine, "n/a" if mine is None else f"{mine:g}%"
        rows.append((what, text, None if measured is None else measured <= bound))
    return rows


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    cells, meta = results["cells"], results["meta"]
    workers = meta["scenario_workers"]
    rows: list[tuple[str, str, bool | None]] = []
    for entry in results.get("ratios") or ratios(results):
        if entry["workers"] == workers:
            measured = "n/a" if entry["value"] is None else f"{entry['value']:.3f}x"
            rows.append((f"{entry['ratio']} >= {entry['target']} (hello, {workers} workers)",
                         measured, entry["met"]))  # fmt: skip
    rows += cost_rows(cells, workers)
    for scenario, label in (("restart", "rolling restarts"), ("recycle", "max-requests")):
        failed = value(find(cells, scenario, "supervisor", workers), "failed")
        rows.append((f"0 failed requests in {label}", "n/a" if failed is None else f"{failed:g}",
                     None if failed is None else failed == 0))  # fmt: skip
    return rows


def ratio_lines(results: dict[str, Any]) -> str:
    """The tracked ratios and the cost targets: the last lines a run prints."""
    said = {True: "met", False: "NOT met", None: "unknown"}
    lines = ["tracked ratios (hello req/s, medians of this run):"]
    for entry in results.get("ratios") or ratios(results):
        measured = "n/a" if entry["value"] is None else f"{entry['value']:.3f}"
        lines.append(f"  w={entry['workers']} {entry['ratio']}: {measured} "
                     f"(target >= {entry['target']}, {said[entry['met']]})")  # fmt: skip
    if "cost" in results["meta"]["scenarios"]:
        lines.append("supervisor cost against gunicorn's arbiter:")
        for what, text, met in cost_rows(results["cells"], results["meta"]["scenario_workers"]):
            lines.append(f"  {what}: {text} ({said[met]})")
    return "\n".join(lines)


# --- Markdown -------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    lines = [
        "# Load tests: asgi-supervisor vs gunicorn (UvicornWorker, -k asgi), uvicorn, granian, "
        "hypercorn",
        "",
        f"Run {meta['started']} ({meta['wall_s']:.0f} s) with `{meta['command']}`.",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Linux {machine['kernel']}, Python {machine['python']}; "
        f"load average {machine['loadavg_start']} at start, {machine.get('loadavg_end', '?')} "
        "at end (the load generator shares the CPUs).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        f"Load: {meta['load_generator']}, 64 keep-alive connections, {meta['seconds']} s per "
        f"throughput run, {meta['fault_seconds']} s around faults; median of {meta['repeat']} "
        "interleaved runs per cell, servers taking turns in a rotating order"
        + (
            f" ({meta.get('starts')} starts per server for the supervisor cost)."
            if "cost" in meta["scenarios"]
            else "."
        ),
    ]
    if meta.get("logs"):
        lines.append(f"Servers: {meta['logs']}; cwd {meta.get('server_cwd', '')}.")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for what, measured, met in targets(results):
        lines.append(f"| {what} | {measured} | {_met(met)} |")
    lines += tables.tracked(results.get("ratios") or ratios(results))
    lines += tables.throughput(results)
    lines += tables.cost(results)
    lines += tables.scenarios(results)
    lines += tables.importtime(results.get("importtime") or {})
    lines += tables.commands(results)
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def _met(met: bool | None) -> str:
    return "yes" if met else "n/a" if met is None else "NO"
