"""What every scenario shares: the run's ``Context`` and the helpers that measure a server."""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.load import Load, LoadResult
from bench.servers import Kind, Options, Server

LOADTESTS = Path(__file__).resolve().parent.parent
REPO = LOADTESTS.parent
APPS = LOADTESTS / "apps"
HELLO = "hello:app"
CONNECTIONS = 64
MIB = 1024 * 1024


class NotApplicable(Exception):
    """The server has no equivalent of what the scenario asks (the cell reads n/a)."""


@dataclass
class Context:
    raw: Path  # server logs and wrk outputs of this run
    seconds: float  # load duration of the throughput scenarios
    fault_seconds: float  # load duration around restarts, recycles and kills
    warmup: float
    tool: str  # "wrk" or "python"
    idle_seconds: float = 10.0  # the master's idle CPU is measured over this
    agent_skip: str | None = None  # why the agent scenario cannot run here
    keep_logs: bool = False  # else each server log is cut to its head and tail after its run
    server_logs: list[Path] = field(default_factory=list)  # compacted after each run
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def log(self, kind: Kind, what: str, profile: str = "") -> Path:
        suffix = f"-{profile}" if profile and profile != "default" else ""
        return self.raw / f"{next(self._names):03d}-{what}-{kind.name}{suffix}.log"

    def load(self, url: str, seconds: float, log: Path, mode: str = "get") -> Load:
        return Load(
            url, connections=CONNECTIONS, seconds=seconds, log=log, mode=mode, tool=self.tool
        )

    def server(
        self,
        kind: Kind,
        workers: int,
        what: str,
        options: Options,
        *,
        app: str = HELLO,
        cwd: Path = APPS,
        env: dict[str, str] | None = None,
    ) -> Server:
        """Start ``kind`` (the hello app unless told otherwise) with its log in raw/."""
        if reason := kind.unsupported(options):
            raise NotApplicable(reason)
        log = self.log(kind, what, options.profile)
        self.server_logs.append(log)
        return Server(kind, app=app, cwd=cwd, workers=workers, log=log, options=options, env=env)

    def hello(self, kind: Kind, workers: int, what: str, options: Options = Options()) -> Server:  # noqa: B008
        return self.server(kind, workers, what, options)


def load_numbers(result: LoadResult) -> dict[str, Any]:
    numbers: dict[str, Any] = {"rps": round(result.rps, 1), "requests": result.requests}
    for pct in ("p50", "p90", "p99"):
        numbers[f"{pct}_ms"] = result.latency_ms.get(pct)
    numbers["failed"] = result.failed
    return {**numbers, "load": result.as_dict()}


def warm(ctx: Context, server: Server, kind: Kind, mode: str = "get", path: str = "/") -> int:
    """Load the server for the warm-up seconds; the number of requests it answered."""
    if ctx.warmup <= 0:
        return 0
    log = ctx.log(kind, "warmup", server.profile)
    return ctx.load(server.url + path, ctx.warmup, log, mode).start().result().requests


def cpu(processes: list[psutil.Process]) -> float:
    """CPU seconds of ``processes`` so far, every thread counted (the ones gone count 0).

    The scheduler's nanoseconds (/proc/PID/task/*/schedstat) where Linux has them:
    psutil's cpu_times count 10 ms ticks, which is 1% of a 1 s window and as much
    as a whole idle supervisor in 10 s.
    """
    total = 0.0
    for proc in processes:
        precise = _schedstat(proc.pid)
        if precise is not None:
            total += precise
            continue
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _schedstat(pid: int) -> float | None:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    nanoseconds, read = 0, False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                nanoseconds += int(stat.read().split()[0])
                read = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile (or a kernel without schedstats)
    return nanoseconds / 1e9 if read else None
