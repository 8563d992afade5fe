"""The scenarios: each starts one server, measures one thing, and stops it (even on errors).

Every function takes the run's ``Context``, a server ``Kind``, the worker count
and the ``Options`` of its variant (the profile among them), and returns one
run's measurements (flat numbers, medians are taken over them) plus ``load``,
wrk's parsed summary. The supervisor-cost scenario lives in ``bench.cost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from bench import cost as cost_
from bench import procs
from bench.context import (
    LOADTESTS,
    MIB,
    REPO,
    Context,
    NotApplicable,
    cpu,
    load_numbers,
    warm,
)
from bench.load import Load, LoadResult
from bench.servers import Kind, Options, Server, shown

REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
__all__ = ["LOADTESTS", "REPO", "SCENARIOS", "Context", "NotApplicable", "Scenario"]


def hello(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(1) Throughput and latency of the hello app, 64 keep-alive connections, in a profile."""
    with ctx.hello(kind, workers, "hello", options) as server:
        server.wait_serving()
        warmed = warm(ctx, server, kind)
        master, workers_ = psutil.Process(server.pid), server.workers()
        before = cpu([master]), cpu(workers_)
        log = ctx.log(kind, "load-hello", options.profile)
        numbers = load_numbers(ctx.load(server.url + "/", ctx.seconds, log).start().result())
        # The supervisor's own share of the CPU under load: it should be about zero.
        single = server.pid in {worker.pid for worker in workers_}  # uvicorn --workers 1
        master_s, workers_s = cpu([master]) - before[0], cpu(workers_) - before[1]
        numbers["master_cpu_ms"] = None if single else round(master_s * 1e3, 1)
        numbers["workers_cpu_s"] = round(workers_s, 2)
        share = None if single or not workers_s else round(100 * master_s / workers_s, 2)
        numbers["master_cpu_pct"] = share
    # Lines per request tell whether a profile's access log is really on (about 1) or off.
    lines, size = procs.log_size(server.log)
    answered = warmed + numbers["requests"]
    numbers["log_lines"], numbers["log_mib"] = lines, round(size / MIB, 2)
    numbers["log_lines_per_request"] = round(lines / answered, 3) if answered else None
    numbers["command"] = shown(server.command)
    return numbers


def agent(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(2) The reference app's POST /agent + GET /result/{id}, real Redis and Postgres."""
    if ctx.agent_skip:
        raise NotApplicable(ctx.agent_skip)
    prefix = f"loadtest_{os.getpid()}_{next(ctx._names)}"
    env = {
        "FASTAGENTIC_REDIS_URL": REDIS_URL,
        "FASTAGENTIC_DATABASE_URL": DATABASE_URL,
        "FASTAGENTIC_REDIS_PREFIX": prefix,  # a clean queue per run, deleted afterwards
        "FASTAGENTIC_DB_SCHEMA": prefix,
        "FASTAGENTIC_RATE_LIMIT": "0",
        "FASTAGENTIC_LOG_LEVEL": "warning",
    }
    server = ctx.server(kind, workers, "agent", options, app="app.main:app", cwd=REPO, env=env)
    try:
        server.wait_serving(path="/ready")
        warm(ctx, server, kind, "agent")
        load = ctx.load(server.url + "/", ctx.seconds, ctx.log(kind, "load-agent"), "agent")
        numbers = load_numbers(load.start().result())
        extra = numbers["load"]["extra"]
        numbers["accepted"], numbers["results"] = extra.get("accepted"), extra.get("results")
        return numbers
    finally:
        server.stop()
        drop_agent_data(prefix)


def drop_agent_data(prefix: str) -> None:
    """Delete the run's Redis keys and Postgres schema (bounded; failures are only reported)."""
    import asyncpg
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
        client.close()
    except Exception as exc:  # the numbers are measured already
        print(f"  note: could not delete Redis keys {prefix}:*: {exc}")

    async def drop() -> None:
        conn = await asyncpg.connect(DATABASE_URL, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE', timeout=30)
        finally:
            await conn.close()

    try:
        asyncio.run(drop())
    except Exception as exc:
        print(f"  note: could not drop schema {prefix}: {exc}")


def _finish(load: Load, started: float, seconds: float) -> LoadResult:
    """Let the load run until ``seconds`` after ``started`` and at least 1 s more, then stop it."""
    time.sleep(max(1.0, seconds - (time.monotonic() - started)))
    load.stop()
    return load.result()


def _wait_roll(server: Server, old: set[int], timeout: float) -> float | None:
    """Seconds until none of ``old`` is left and N new workers are up and answering."""
    started = time.monotonic()

    def rolled() -> float | None:
        pids = {worker.pid for worker in server.workers()}
        if pids & old or len(pids) < server.count or server.answers() is None:
            return None
        return time.monotonic() - started

    seconds: float | None = procs.poll(rolled, timeout, interval=0.02)
    return seconds


def restart(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(3) Two rolling restarts (SIGHUP to the master) under keep-alive load."""
    with ctx.hello(kind, workers, "restart", options) as server:
        server.wait_serving()
        log = ctx.log(kind, "load-restart")
        load = ctx.load(server.url + "/", ctx.fault_seconds + 60, log).start()
        started = time.monotonic()
        time.sleep(min(1.0, ctx.fault_seconds / 4))
        rolls: list[float | None] = []
        for _ in range(2):
            old = {worker.pid for worker in server.workers()}
            os.kill(server.pid, signal.SIGHUP)
            rolls.append(_wait_roll(server, old, timeout=45))
            if rolls[-1] is None:
                break
        result = _finish(load, started, ctx.fault_seconds)
        numbers = load_numbers(result)
        numbers["rolls_completed"] = sum(roll is not None for roll in rolls)
        numbers["roll_s"] = [round(roll, 2) if roll else None for roll in rolls]
        return numbers


def recycle(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(4) Recycling by request count (1000 + jitter 100) under keep-alive load."""
    recycling = dataclasses.replace(options, max_requests=1000)
    with ctx.hello(kind, workers, "recycle", recycling) as server:
        server.wait_serving()
        seen = {worker.pid for worker in server.workers()}
        load = ctx.load(server.url + "/", ctx.fault_seconds, ctx.log(kind, "load-recycle")).start()
        deadline = time.monotonic() + ctx.fault_seconds + 15
        while load.running() and time.monotonic() < deadline:
            seen |= {worker.pid for worker in server.workers()}
            time.sleep(0.05)
        numbers = load_numbers(load.result())
        numbers["recycles"] = len(seen) - workers
        return numbers


def kill(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(5) SIGKILL one worker under load: errors, and time until N workers serve again."""
    respawning = dataclasses.replace(options, respawn=True)  # granian does not, unless told
    with ctx.hello(kind, workers, "kill", respawning) as server:
        server.wait_serving()
        original = {worker.pid for worker in server.workers()}
        load = ctx.load(
            server.url + "/", ctx.fault_seconds + 60, ctx.log(kind, "load-kill")
        ).start()
        started = time.monotonic()
        time.sleep(min(1.0, ctx.fault_seconds / 4))
        victim = min(original)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def recovered() -> float | None:
            if server.proc.poll() is not None:
                return -1.0  # the master gave up: hypercorn stops when a worker dies
            pids = {worker.pid for worker in server.workers()} - {victim}
            if len(pids) < workers or server.answers() not in pids - original:
                return None
            return time.monotonic() - killed

        recovery = procs.poll(recovered, timeout=30, interval=0.01)
        numbers = load_numbers(_finish(load, started, ctx.fault_seconds))
        exited = recovery is not None and recovery < 0
        numbers["recovery_ms"] = None
        if recovery is not None and not exited:
            numbers["recovery_ms"] = round(recovery * 1000, 1)
        numbers["respawned"] = numbers["recovery_ms"] is not None
        numbers["master_exited"] = exited
        return numbers


def memory(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(6) RSS of the master and of its N workers after a warm-up (USS/PSS too)."""
    with ctx.hello(kind, workers, "memory", options) as server:
        server.wait_serving()
        warm(ctx, server, kind)
        time.sleep(0.5)
        master = psutil.Process(server.pid)
        procs_ = server.workers()
        full = [proc.memory_full_info() for proc in procs_]
        everything = [master, *master.children(recursive=True)]
        own = master.memory_full_info()
        return {
            "master_rss_mib": round(own.rss / MIB, 1),
            "master_uss_mib": round(own.uss / MIB, 1),
            "master_pss_mib": round(own.pss / MIB, 1),
            "workers_rss_mib": round(sum(info.rss for info in full) / MIB, 1),
            "workers_uss_mib": round(sum(info.uss for info in full) / MIB, 1),
            "workers_pss_mib": round(sum(info.pss for info in full) / MIB, 1),
            "total_rss_mib": round(sum(p.memory_info().rss for p in everything) / MIB, 1),
            "processes": len(everything),
        }


def lifecycle(ctx: Context, kind: Kind, workers: int, options: Options) -> dict[str, Any]:
    """(7) Spawn -> first 200, then SIGTERM -> master exit with /sleep?s=1 in flight."""
    procs.quiet()  # the start timed on idle CPUs, whoever ran before it
    with ctx.hello(kind, workers, "lifecycle", options) as server:
        first = procs.poll(server.answers, timeout=30, interval=0.005)
        startup = time.monotonic() - server.started
        if first is None:
            raise RuntimeError(f"{kind.name} never answered:\n{server.tail()}")
        all_serving = server.wait_serving()
        marker = ctx.raw / f"inflight-{server.port}"
        status: list[int | str] = []

        def in_flight() -> None:
            try:
                url = f"{server.url}/sleep?s=1&mark={marker}"
                status.append(httpx.get(url, timeout=15).status_code)
            except httpx.HTTPError as exc:
                status.append(type(exc).__name__)

        thread = threading.Thread(target=in_flight, daemon=True)
        thread.start()
        procs.poll(lambda: True if marker.exists() else None, timeout=5, interval=0.002)
        term = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        exited = procs.poll(server.proc.poll, timeout=40, interval=0.002)
        stopped = time.monotonic() - term
        thread.join(15)
        left = _session_members(server.pid)
        return {
            "startup_ms": round(startup * 1000, 1),
            "all_workers_ms": round(all_serving * 1000, 1),
            "shutdown_ms": round(stopped * 1000, 1) if exited is not None else None,
            "exit_code": exited,
            "inflight_ok": status == [200],
            "inflight_status": status[0] if status else None,
            "left_running": left,
        }


def _session_members(sid: int) -> int:
    """Workers still in the server's session once its master has exited (orphans)."""
    count = 0
    for proc in psutil.process_iter():
        try:
            if proc.pid != sid and os.getsid(proc.pid) == sid and procs.is_worker(proc):
                count += 1
        except OSError:
            continue
    return count


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context, Kind, int, Options], dict[str, Any]]
    variants: tuple[Options, ...] = (Options(),)
    per_worker_count: bool = False  # run at every --workers value (else --scenario-workers)
    profiled: bool = False  # runs every --profiles profile (else each server's default)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("hello", "hello: throughput and latency, 64 keep-alive connections", hello,
                 per_worker_count=True, profiled=True),
        Scenario("agent", "agent: POST /agent + GET /result (Redis + Postgres)", agent),
        Scenario("restart", "2 rolling restarts (SIGHUP) under keep-alive load", restart),
        Scenario("recycle", "max-requests recycling (1000 + jitter 100) under load", recycle),
        Scenario("kill", "kill -9 of one worker under load", kill),
        Scenario("memory", "memory after warm-up", memory, (Options(), Options(preload=True))),
        Scenario("lifecycle", "start-up to first 200; SIGTERM to exit with 1 in flight", lifecycle),
        Scenario("cost", "supervisor cost: start, memory, idle and loaded CPU of the master",
                 cost_.cost),
    )
}  # fmt: skip
