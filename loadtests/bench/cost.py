"""The supervisor's own cost against gunicorn's arbiter, and where its start-up time goes.

``cost`` is a scenario (one start per run, servers interleaved, default profile):
exec to the first 200, the master's RSS/PSS and the PSS of master + workers
(psutil ``memory_full_info``), the master's CPU while idle for ``idle_seconds``,
and the master's CPU during a wrk run as a share of the workers' CPU.

``import_times`` starts the real command once more under ``python -X importtime``
(ours as ``python -X importtime -m supervisor ...``, gunicorn's arbiter as
``python -X importtime -m gunicorn ...``), copies the master's import lines the
moment the first 200 arrives, stops the server and summarises the top imports
into raw/importtime-<server>.txt. Forked workers import too, on the same stderr:
a ``sitecustomize`` on PYTHONPATH moves each forked child's stderr to its own
file (``os.register_at_fork``), so the master's lines are the master's alone.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import psutil

from bench import procs
from bench.context import APPS, HELLO, MIB, Context, cpu, load_numbers, warm
from bench.servers import Kind, Options, Server, shown

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")
TOP = 15
SPLIT_CHILDREN = '''\
"""loadtests: each forked child's stderr (its -X importtime lines) goes to its own file."""
import os


def _split_stderr():
    fd = os.open(os.environ["LOADTESTS_CHILD_STDERR"] + ".%d" % os.getpid(),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


if os.environ.get("LOADTESTS_CHILD_STDERR"):
    os.register_at_fork(after_in_child=_split_stderr)
'''


def cost(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(8) Start, memory and CPU of the master, against gunicorn's arbiter."""
    procs.quiet()  # each start timed on idle CPUs, whoever ran before it
    with ctx.hello(kind, workers, "cost", options) as server:
        first = procs.poll(server.answers, timeout=30, interval=0.005)
        startup = time.monotonic() - server.started
        if first is None:
            raise RuntimeError(f"{kind.name} never answered:\n{server.tail()}")
        server.wait_serving()
        warm(ctx, server, kind)
        time.sleep(0.5)  # what a server does right after start is not its idle cost
        master, workers_ = psutil.Process(server.pid), server.workers()
        if server.pid in {worker.pid for worker in workers_}:
            raise RuntimeError(f"{kind.name} serves in its master: no supervisor to measure")
        numbers: dict[str, Any] = {"startup_ms": round(startup * 1000, 1)}
        numbers.update(_memory(master, workers_))
        before, started = cpu([master]), time.monotonic()
        time.sleep(ctx.idle_seconds)
        idle, elapsed = cpu([master]) - before, time.monotonic() - started
        numbers["idle_cpu_ms"] = round(idle * 1000, 1)
        numbers["idle_cpu_pct"] = round(100 * idle / elapsed, 3)
        before_master, before_workers = cpu([master]), cpu(workers_)
        log = ctx.log(kind, "load-cost")
        loaded = load_numbers(ctx.load(server.url + "/", ctx.seconds, log).start().result())
        master_s = cpu([master]) - before_master
        workers_s = cpu(workers_) - before_workers
        numbers.update(rps=loaded["rps"], failed=loaded["failed"], load=loaded["load"])
        numbers["load_master_cpu_ms"] = round(master_s * 1000, 1)
        numbers["load_workers_cpu_s"] = round(workers_s, 2)
        numbers["load_master_cpu_pct"] = round(100 * master_s / workers_s, 3) if workers_s else None
        numbers["command"] = shown(server.command)
        return numbers


def _memory(master: psutil.Process, workers: list[psutil.Process]) -> dict[str, float]:
    own = master.memory_full_info()
    pss = 0
    for worker in workers:
        pss += worker.memory_full_info().pss
    everything = [master, *master.children(recursive=True)]
    return {
        "master_rss_mib": round(own.rss / MIB, 1),
        "master_pss_mib": round(own.pss / MIB, 1),
        "master_uss_mib": round(own.uss / MIB, 1),
        "workers_pss_mib": round(pss / MIB, 1),
        "total_pss_mib": round((own.pss + pss) / MIB, 1),
        "processes": len(everything),
    }


# --- import time ----------------------------------------------------------------------------


def import_times(ctx: Context, kinds: list[Kind], workers: int) -> dict[str, Any]:
    """One ``-X importtime`` start of ours and of gunicorn's arbiter; {server: summary}."""
    site = ctx.raw / "importtime-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SPLIT_CHILDREN)
    found: dict[str, Any] = {}
    for kind in kinds:
        if kind.name not in ("supervisor", "gunicorn"):
            continue
        try:
            found[kind.name] = _import_time(ctx, kind, workers, site)
        except (RuntimeError, OSError) as exc:
            found[kind.name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            procs.stop_all()
    return found


def _import_time(ctx: Context, kind: Kind, workers: int, site: Path) -> dict[str, Any]:
    log = ctx.log(kind, "importtime")
    env = {
        "LOADTESTS_CHILD_STDERR": str(ctx.raw / f"importtime-{kind.name}-child"),
        "PYTHONPATH": f"{site}{os.pathsep}{APPS}",
    }
    server = Server(kind, app=HELLO, cwd=APPS, workers=workers, log=log, env=env,
                    python_flags=("-X", "importtime"))  # fmt: skip
    with server:
        if procs.poll(server.answers, timeout=30, interval=0.005) is None:
            raise RuntimeError(f"{kind.name} never answered:\n{server.tail()}")
        first = time.monotonic() - server.started
        lines = log.read_text(errors="replace").splitlines()  # the master's, up to the first 200
    imports = parse_importtime(lines)
    if not imports:
        raise RuntimeError(f"no -X importtime lines in {log}")
    top = sorted(imports, key=lambda row: -row[1])[:TOP]
    heavy = sorted(imports, key=lambda row: -row[0])[:TOP]
    summary = {
        "command": shown(server.command),
        "first_200_ms": round(first * 1000, 1),
        "modules": len(imports),
        "total_ms": round(sum(row[0] for row in imports) / 1000, 1),
        "top_cumulative": [[name, round(cum / 1000, 2), round(own / 1000, 2)]
                           for own, cum, _, name in top],
        "top_self": [[name, round(own / 1000, 2)] for own, _, _, name in heavy],
    }  # fmt: skip
    path = ctx.raw / f"importtime-{kind.name}.txt"
    path.write_text(render_importtime(summary))
    summary["summary"] = str(path)
    return summary


def parse_importtime(lines: list[str]) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) for every ``-X importtime`` line."""
    rows = []
    for line in lines:
        match = IMPORT_LINE.match(line)
        if match and match[4] != "sitecustomize":
            rows.append((int(match[1]), int(match[2]), len(match[3]) // 2, match[4]))
    return rows


def render_importtime(summary: dict[str, Any]) -> str:
    lines = [
        f"$ {summary['command']}",
        f"(python -X importtime; stopped at the first 200, {summary['first_200_ms']} ms after "
        "exec)",
        f"the master imported {summary['modules']} modules: {summary['total_ms']} ms of import "
        "time",
        "",
        f"top {TOP} by cumulative time (a package includes what it imports):",
        f"{'cumulative ms':>14} {'self ms':>9}  module",
    ]
    lines += [f"{cum:>14.2f} {own:>9.2f}  {name}" for name, cum, own in summary["top_cumulative"]]
    lines += ["", f"top {TOP} by self time:", f"{'self ms':>9}  module"]
    lines += [f"{own:>9.2f}  {name}" for name, own in summary["top_self"]]
    return "\n".join(lines) + "\n"
