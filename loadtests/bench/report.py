"""Results: medians per cell, ratios against gunicorn + UvicornWorker, Markdown and PNG plots."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ANCHOR = "gunicorn"
PLOTS = ("throughput.png", "latency_p99.png", "restart_errors.png", "memory.png", "lifecycle.png")
COLORS = {
    "supervisor": "#2a7ab0",
    "gunicorn": "#e08a2c",
    "uvicorn": "#5aa55a",
    "granian": "#a05ab0",
}

Cell = dict[str, Any]


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every number over the runs; booleans become "k/n"; lists and dicts are kept raw."""
    keys = {key for run in runs for key in run}
    result: dict[str, Any] = {}
    for key in sorted(keys):
        values = [run.get(key) for run in runs]
        if all(isinstance(v, bool) for v in values):
            result[key] = f"{sum(bool(v) for v in values)}/{len(values)}"
            continue
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            middle = statistics.median(numbers)
            result[key] = round(middle, 3) if isinstance(middle, float) else middle
    return result


def find(
    cells: Iterable[Cell], scenario: str, server: str, workers: int, variant: str
) -> Cell | None:
    for cell in cells:
        key = (cell["scenario"], cell["server"], cell["workers"], cell["variant"])
        if key == (scenario, server, workers, variant):
            return cell
    return None


def ratio(cells: list[Cell], cell: Cell, metric: str) -> float | None:
    """``cell``'s median of ``metric`` over the anchor's (same scenario, workers, variant)."""
    anchor = find(cells, cell["scenario"], ANCHOR, cell["workers"], cell["variant"])
    if anchor is None:
        return None
    mine, theirs = cell["median"].get(metric), anchor["median"].get(metric)
    if not isinstance(mine, int | float) or not isinstance(theirs, int | float) or not theirs:
        return None
    return round(mine / theirs, 3)


def targets(cells: list[Cell], workers: int) -> list[tuple[str, str, bool | None]]:
    """The issue's targets for asgi-supervisor: (what, measured, met); met is None when unknown."""

    def ours(scenario: str, metric: str, count: int = workers, variant: str = "") -> Any:
        cell = find(cells, scenario, "supervisor", count, variant)
        return cell["median"].get(metric) if cell else None

    def against(scenario: str, metric: str, count: int = workers) -> float | None:
        cell = find(cells, scenario, "supervisor", count, "")
        return ratio(cells, cell, metric) if cell else None

    rows: list[tuple[str, str, bool | None]] = []
    rps = against("hello", "rps", 2)
    rows.append(("hello req/s at 2 workers >= 1.05x gunicorn", _x(rps), _ge(rps, 1.05)))
    p99 = against("hello", "p99_ms", 2)
    rows.append(("hello p99 at 2 workers <= gunicorn", _x(p99), _le(p99, 1.0)))
    for scenario, label in (("restart", "rolling restarts"), ("recycle", "max-requests")):
        failed = ours(scenario, "failed")
        rows.append((f"0 failed requests in {label}", _s(failed), _eq0(failed)))
    rss = against("memory", "master_rss_mib")
    rows.append(("supervisor RSS < gunicorn arbiter RSS", _x(rss), _le(rss, 0.9999)))
    start = against("lifecycle", "startup_ms")
    rows.append(("start-up to first 200 <= gunicorn", _x(start), _le(start, 1.0)))
    return rows


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x gunicorn"


def _s(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _ge(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _le(value: float | None, ceiling: float) -> bool | None:
    return None if value is None else value <= ceiling


def _eq0(value: Any) -> bool | None:
    return None if value is None else value == 0


# --- Markdown -------------------------------------------------------------------------------

Column = tuple[str, Callable[[list[Cell], Cell], Any]]


def _metric(name: str, digits: int = 1) -> Callable[[list[Cell], Cell], Any]:
    def get(cells: list[Cell], cell: Cell) -> Any:
        value = cell["median"].get(name)
        if isinstance(value, float):
            return f"{value:,.{digits}f}"
        return "" if value is None else f"{value:,}" if isinstance(value, int) else value

    return get


def _ratio(name: str) -> Callable[[list[Cell], Cell], Any]:
    def get(cells: list[Cell], cell: Cell) -> Any:
        value = ratio(cells, cell, name)
        return "" if value is None or cell["server"] == ANCHOR else f"{value:.2f}x"

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


TABLES: dict[str, list[Column]] = {
    "hello": [("req/s", _metric("rps", 0)), ("x gunicorn", _ratio("rps")),
              ("p50 ms", _metric("p50_ms", 2)), ("p99 ms", _metric("p99_ms", 2)),
              ("p99 x gunicorn", _ratio("p99_ms")), ("failed", _metric("failed")),
              ("master CPU ms", _metric("master_cpu_ms"))],
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
             ("respawned", _metric("respawned"))],
    "memory": [("master RSS MiB", _metric("master_rss_mib")),
               ("x gunicorn", _ratio("master_rss_mib")),
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
}  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    meta, cells = results["meta"], results["cells"]
    machine = meta["machine"]
    lines = [
        "# Load tests: asgi-supervisor vs gunicorn + UvicornWorker, uvicorn --workers, granian",
        "",
        f"Run {meta['started']} ({meta['wall_s']:.0f} s) with `{meta['command']}`.",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Linux {machine['kernel']}, Python {machine['python']}; "
        f"load average {machine['loadavg_start']} at start, {machine.get('loadavg_end', '?')} "
        "at end (the load generator shares the CPUs).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        f"Load: {meta['load_generator']}, 64 keep-alive connections, {meta['seconds']} s per "
        f"throughput run, {meta['fault_seconds']} s around faults; median of {meta['repeat']} "
        "interleaved runs per cell (servers in rotating order each repetition).",
        "",
        "## Targets (asgi-supervisor against gunicorn + UvicornWorker)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for what, measured, met in targets(cells, meta["scenario_workers"]):
        lines.append(
            f"| {what} | {measured} | {'yes' if met else 'n/a' if met is None else 'NO'} |"
        )
    for name, title in meta["scenarios"].items():
        rows = [cell for cell in cells if cell["scenario"] == name]
        if not rows:
            continue
        columns = TABLES[name]
        lines += ["", f"## {title}", ""]
        lines.append("| server | workers | " + " | ".join(head for head, _ in columns) + " |")
        lines.append("|---" * (len(columns) + 2) + "|")
        for cell in rows:
            label = cell["label"]
            if cell["na"]:
                values = [f"n/a: {cell['na']}"] + [""] * (len(columns) - 1)
            elif not cell["runs"]:
                why = " ".join("; ".join(cell["errors"]).split())[:160].replace("|", "/")
                values = [f"failed: {why}"] + [""] * (len(columns) - 1)
            else:
                values = [str(get(cells, cell)) for _, get in columns]
            lines.append(f"| {label} | {cell['workers']} | " + " | ".join(values) + " |")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


# --- plots ----------------------------------------------------------------------------------


Stat = tuple[float, float, float]  # median, min, max over the runs
Lookup = Callable[[str, str], Stat | None]


def stat(cell: Cell | None, metric: str) -> Stat | None:
    if cell is None:
        return None
    values = [run.get(metric) for run in cell["runs"]]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return float(statistics.median(numbers)), min(numbers), max(numbers)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Grouped bars, one colour per server, whiskers from the fastest to the slowest run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: list[Cell] = results["cells"]
    servers: list[str] = results["meta"]["servers"]
    labels = {cell["server"]: cell["label"] for cell in cells if not cell["variant"]}
    written = []

    def bars(name: str, groups: list[str], lookup: Lookup, ylabel: str, title: str) -> None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / max(1, len(servers))
        for i, server in enumerate(servers):
            for j, group in enumerate(groups):
                found = lookup(server, group)
                x = j + (i - (len(servers) - 1) / 2) * width
                if found is None:
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                    continue
                value, low, high = found
                label = labels.get(server, server) if j == 0 else None
                ax.bar(x, value, width, color=COLORS.get(server), label=label)
                if high > low:
                    ax.errorbar(x, value, [[value - low], [high - value]], fmt="none",
                                ecolor="black", elinewidth=0.8, capsize=2)  # fmt: skip
                text = f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"
                ax.text(x, value, text, ha="center", va="bottom", fontsize=7,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.4})  # fmt: skip
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4,
                      frameon=False)  # fmt: skip
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    def of(scenario: str, metric: str, workers: int | None = None, variant: str = "") -> Lookup:
        def get(server: str, group: str) -> Stat | None:
            count = workers if workers is not None else int(group.split(maxsplit=1)[0])
            return stat(find(cells, scenario, server, count, variant), metric)

        return get

    meta = results["meta"]
    runs = f"median of {meta['repeat']} runs, whiskers min-max"
    by_workers = [f"{n} worker{'s' if n > 1 else ''}" for n in meta["workers"]]
    hello = f"hello app, wrk 64 keep-alive connections, {meta['seconds']} s ({runs})"
    bars("throughput.png", by_workers, of("hello", "rps"), "requests/s", hello)
    bars("latency_p99.png", by_workers, of("hello", "p99_ms"), "p99 latency, ms (lower is better)",
         hello)  # fmt: skip
    n = meta["scenario_workers"]

    def failed(server: str, group: str) -> Stat | None:
        return of(group.split(maxsplit=1)[0], "failed", n)(server, group)

    faults = ["restart (2x SIGHUP)", "recycle (max-requests)", "kill (-9 one)"]
    title = f"failed requests under keep-alive load, {n} workers ({runs})"
    bars("restart_errors.png", faults, failed, "failed requests (lower is better)", title)

    def rss(server: str, group: str) -> Stat | None:
        variant = "--preload" if "preload" in group else ""
        metric = "master_rss_mib" if group.startswith("master") else "workers_rss_mib"
        return of("memory", metric, n, variant)(server, group)

    groups = ["master RSS", "workers RSS", "master RSS --preload", "workers RSS --preload"]
    bars("memory.png", groups, rss, "MiB", f"memory after warm-up, {n} workers ({runs})")

    def life(server: str, group: str) -> Stat | None:
        metric = "startup_ms" if group.startswith("start") else "shutdown_ms"
        return of("lifecycle", metric, n)(server, group)

    groups = ["start-up to first 200", "SIGTERM to exit (1 s request in flight)"]
    bars("lifecycle.png", groups, life, "ms", f"start and stop, {n} workers ({runs})")
    return written
