"""PNG plots of a run: grouped bars, one colour per server, whiskers from the best to worst run.

throughput.png        hello req/s at defaults (each server as a user first runs it)
throughput_equal.png  hello req/s at equal features (access log on; ours bare, production)
latency_p99.png       hello p99 at defaults
restart_errors.png    failed requests in restart / recycle / kill
memory.png            RSS after warm-up, with and without --preload
lifecycle.png         start-up and SIGTERM-to-exit
supervisor_cost.png   the master's start, memory and CPU against gunicorn's arbiter
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cells import Cell, Stat, find, profile_of, stat

COLORS = {
    "supervisor": "#2a7ab0",
    "gunicorn": "#e08a2c",
    "gunicorn-asgi": "#c0504d",
    "uvicorn": "#5aa55a",
    "granian": "#a05ab0",
    "hypercorn": "#7f7f7f",
}
HATCHES = {"bare": "//", "production": "xx"}
Series = tuple[str, str]  # server, profile
Lookup = Callable[[Series, str], Stat | None]
COST_PANELS = (
    ("startup_ms", "exec to first 200, ms"),
    ("master_rss_mib", "master RSS, MiB"),
    ("total_pss_mib", "PSS master + workers, MiB"),
    ("idle_cpu_pct", "master idle CPU, %"),
    ("load_master_cpu_pct", "master CPU under load,\n% of the workers'"),
)


class Plots:
    def __init__(self, results: dict[str, Any], out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.cells: list[Cell] = results["cells"]
        self.meta: dict[str, Any] = results["meta"]
        self.out = out
        self.labels = {(c["server"], profile_of(c)): c["label"] for c in self.cells
                       if not c["variant"]}  # fmt: skip
        self.defaults = [(server, "default") for server in self.meta["servers"]]
        self.runs = f"median of {self.meta['repeat']} runs, whiskers min-max"
        self.written: list[Path] = []

    def of(
        self, scenario: str, metric: str, workers: int | None = None, variant: str = ""
    ) -> Lookup:
        """A lookup by (server, profile) and group; the group names the worker count if none."""

        def get(key: Series, group: str) -> Stat | None:
            count = workers if workers is not None else int(group.split(maxsplit=1)[0])
            found = find(self.cells, scenario, key[0], count, variant=variant, profile=key[1])
            return stat(found, metric)

        return get

    def bars(self, name: str, groups: list[str], series: list[Series], lookup: Lookup, *,
             ylabel: str, title: str) -> None:  # fmt: skip
        fig, ax = self.plt.subplots(figsize=(9, 4.8))
        width = 0.8 / max(1, len(series))
        for i, key in enumerate(series):
            for j, group in enumerate(groups):
                x = j + (i - (len(series) - 1) / 2) * width
                label = self.labels.get(key, key[0]) if j == 0 else None
                bar(ax, x, lookup(key, group), key, width=width, label=label)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3,
                      frameon=False)  # fmt: skip
        self.save(fig, name)

    def save(self, fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=110)
        self.plt.close(fig)
        self.written.append(self.out / name)

    def hello(self) -> None:
        meta = self.meta
        groups = [f"{n} worker{'s' if n > 1 else ''}" for n in meta["workers"]]
        hello = f"hello app, wrk 64 keep-alive connections, {meta['seconds']} s ({self.runs})"
        rps, p99 = self.of("hello", "rps"), self.of("hello", "p99_ms")
        self.bars(
            "throughput.png",
            groups,
            self.defaults,
            rps,
            ylabel="requests/s",
            title=f"defaults: each server as a user first runs it\n{hello}",
        )
        equal = [(server, "access-log") for server in meta["servers"]]
        equal += [("supervisor", "bare"), ("supervisor", "production")]
        self.bars(
            "throughput_equal.png",
            groups,
            [key for key in equal if key in self.labels],
            rps,
            ylabel="requests/s",
            title=f"equal features: access log on everywhere (ours bare and production "
            f"beside)\n{hello}",
        )
        self.bars("latency_p99.png", groups, self.defaults, p99,
                  ylabel="p99 latency, ms (lower is better)",
                  title=f"defaults\n{hello}")  # fmt: skip

    def scenarios(self) -> None:
        n, names = self.meta["scenario_workers"], self.meta["scenarios"]
        faults = [name for name in ("restart", "recycle", "kill") if name in names]
        if faults:
            self.bars(
                "restart_errors.png",
                faults,
                self.defaults,
                lambda key, group: self.of(group, "failed", n)(key, group),
                ylabel="failed requests (lower is better)",
                title=f"failed requests under keep-alive load, {n} workers ({self.runs})",
            )

        def rss(key: Series, group: str) -> Stat | None:
            variant = "--preload" if "preload" in group else ""
            metric = "master_rss_mib" if group.startswith("master") else "workers_rss_mib"
            return self.of("memory", metric, n, variant)(key, group)

        def life(key: Series, group: str) -> Stat | None:
            metric = "startup_ms" if group.startswith("start") else "shutdown_ms"
            return self.of("lifecycle", metric, n)(key, group)

        if "memory" in names:
            groups = ["master RSS", "workers RSS", "master RSS --preload", "workers RSS --preload"]
            self.bars(
                "memory.png",
                groups,
                self.defaults,
                rss,
                ylabel="MiB",
                title=f"memory after warm-up, {n} workers ({self.runs})",
            )
        if "lifecycle" in names:
            groups = ["start-up to first 200", "SIGTERM to exit (1 s request in flight)"]
            self.bars("lifecycle.png", groups, self.defaults, life, ylabel="ms",
                      title=f"start and stop, {n} workers ({self.runs})")  # fmt: skip

    def cost(self) -> None:
        """One panel per figure of the supervisor's cost, a bar per server."""
        n = self.meta["scenario_workers"]
        present = [key for key in self.defaults if find(self.cells, "cost", key[0], n)]
        fig, axes = self.plt.subplots(1, len(COST_PANELS), figsize=(13, 4.4))
        for ax, (metric, title) in zip(axes, COST_PANELS, strict=True):
            for i, key in enumerate(present):
                bar(ax, i, stat(find(self.cells, "cost", key[0], n), metric), key)
            names = [self.labels.get(key, key[0]) for key in present]
            ax.set_xticks(range(len(present)), names, rotation=35, ha="right", fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.set_ylim(bottom=0)
            ax.spines[["top", "right"]].set_visible(False)
        fig.suptitle(f"supervisor cost, {n} workers, hello app, default profiles (median of "
                     f"{self.meta.get('starts', '?')} interleaved starts, whiskers min-max)",
                     fontsize=10)  # fmt: skip
        self.save(fig, "supervisor_cost.png")


def bar(ax: Any, x: float, found: Stat | None, key: Series, *, width: float = 0.8,
        label: str | None = None) -> None:  # fmt: skip
    if found is None:
        ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        return
    middle, low, high = found
    ax.bar(x, middle, width, color=COLORS.get(key[0]), hatch=HATCHES.get(key[1]),
           edgecolor="white", label=label)  # fmt: skip
    if high > low:
        ax.errorbar(x, middle, [[middle - low], [high - middle]], fmt="none", ecolor="black",
                    elinewidth=0.8, capsize=2)  # fmt: skip
    text = f"{middle:,.0f}" if middle >= 10 or middle == int(middle) else f"{middle:.2f}"
    ax.text(x, middle, text, ha="center", va="bottom", fontsize=6,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})  # fmt: skip


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every plot the run has data for; the paths written."""
    plot = Plots(results, out)
    names = results["meta"]["scenarios"]
    if "hello" in names:
        plot.hello()
    plot.scenarios()
    if "cost" in names:
        plot.cost()
    return plot.written
