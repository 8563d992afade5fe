"""Chaos run of the reference service: every task answered 202 must complete, and no 500.

    .venv/bin/python loadtests/chaos_tasks.py                 # 60 s, the issue's run
    .venv/bin/python loadtests/chaos_tasks.py --quick         # 20 s, fewer faults (CI)

The app runs under the supervisor (``python -m supervisor app.main:app -w 2``)
on a private redis-server without persistence and a private Postgres cluster
(both on free loopback ports, so nobody else's backends are disturbed). One
client posts tasks open-loop at ``--rate`` per second while the run

- restarts Redis with data loss (SIGKILL, then a new empty server),
- restarts Postgres (fast shutdown, then start) ``--pg-restarts`` times,
- SIGKILLs a worker (mid-task) ``--kills`` times,

then waits until every accepted task is done or failed in Postgres. It
prints and saves (``--out``) tasks accepted vs completed, the tasks left
pending or running, and the responses by status (500s: target 0). Exit 0
when every accepted task completed and no 500 was seen, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from tests.app.private import PrivatePostgres, PrivateRedis  # noqa: E402
from tests.supervisor_process import SupervisorProcess  # noqa: E402

RESULTS = REPO / "loadtests" / "results"


@dataclass
class Report:
    command: str
    seconds: float
    rate: float
    workers: int
    accepted: int = 0
    done: int = 0
    failed: int = 0
    stuck: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)
    unavailable_checks: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    events: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    reclaimed: int = 0
    drain_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.accepted > 0
            and self.done + self.failed == self.accepted
            and not self.stuck
            and self.responses.get("500", 0) == 0
        )


@dataclass
class Load:
    """Open-loop posts: one every 1/rate s, however slow the answers are."""

    url: str
    rate: float
    accepted: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0

    async def run(self, seconds: float) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=self.url, timeout=15, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - started) < seconds:
                n += 1
                task = asyncio.create_task(self._post(client, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(max(0.0, n / self.rate - elapsed))
            if tasks:
                await asyncio.wait(tasks, timeout=30)

    async def _post(self, client: httpx.AsyncClient, n: int) -> None:
        try:
            response = await client.post("/agent", json={"prompt": f"chaos task {n}"})
        except httpx.HTTPError:
            self.transport_errors += 1  # a killed worker's connection: never answered
            return
        self.statuses[str(response.status_code)] += 1
        if response.status_code == 202:
            self.accepted.append(response.json()["task_id"])
        elif response.status_code == 503:
            self.checks[str(response.json().get("check", "?"))] += 1


def schedule(args: argparse.Namespace) -> list[tuple[float, str]]:
    """When each fault happens: spread over the run, never two at once."""
    span = args.seconds
    faults = ["redis"] * args.redis_restarts + ["postgres"] * args.pg_restarts
    slots = [span * (i + 1) / (len(faults) + 1) for i in range(len(faults))]
    events = list(zip(slots, faults, strict=True))
    busy = [(t - 1.0, t + args.down + 2.0) for t, _ in events]
    kills: list[float] = []
    t = 3.0
    step = max(1.5, (span - 6.0) / max(1, args.kills))
    while len(kills) < args.kills and t < span - 1:
        if not any(lo <= t <= hi for lo, hi in busy):
            kills.append(t)
            t += step
        else:
            t += 0.5
    return sorted(events + [(k, "kill") for k in kills])


async def chaos(
    args: argparse.Namespace,
    process: SupervisorProcess,
    redis_server: PrivateRedis,
    pg_server: PrivatePostgres,
    report: Report,
) -> None:
    started = time.monotonic()
    for at, fault in schedule(args):
        await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
        stamp = f"t={time.monotonic() - started:5.1f}s"
        if fault == "kill":
            workers = sorted(process.children())
            if not workers:
                report.events.append(f"{stamp} kill skipped: no worker alive")
                continue
            victim = random.choice(workers)
            os.kill(victim, signal.SIGKILL)
            report.events.append(f"{stamp} SIGKILL worker {victim}")
        elif fault == "redis":
            await asyncio.to_thread(redis_server.restart, args.down)
            report.events.append(f"{stamp} Redis killed, restarted empty after {args.down}s")
        else:
            await asyncio.to_thread(pg_server.restart, args.down)
            report.events.append(f"{stamp} Postgres restarted (fast), down {args.down}s")


async def drain(pg_url: str, accepted: list[str], timeout: float, report: Report) -> None:
    """Wait until every accepted task is done or failed; record what is left."""
    started = time.monotonic()
    conn = await asyncpg.connect(pg_url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT task_id, status, attempts FROM agent_tasks WHERE task_id = ANY($1)",
                accepted,
            )
            by_status = Counter(row["status"] for row in rows)
            missing = len(accepted) - len(rows)
            open_ = by_status["pending"] + by_status["running"] + missing
            if open_ == 0 or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    report.drain_seconds = round(time.monotonic() - started, 1)
    report.done, report.failed = by_status["done"], by_status["failed"]
    report.stuck = {
        k: v
        for k, v in (
            ("pending", by_status["pending"]),
            ("running", by_status["running"]),
            ("missing", missing),
        )
        if v
    }
    report.attempts = {str(k): v for k, v in sorted(Counter(r["attempts"] for r in rows).items())}


def environment(redis_server: PrivateRedis, pg_server: PrivatePostgres) -> dict[str, str]:
    return {
        "FASTAGENTIC_REDIS_URL": redis_server.url,
        "FASTAGENTIC_DATABASE_URL": pg_server.url,
        "FASTAGENTIC_RATE_LIMIT": "1000000/hour",  # counted in Redis, never reached
        "FASTAGENTIC_TASK_VISIBILITY_TIMEOUT": "5",
        "FASTAGENTIC_TASK_CONCURRENCY": "8",
        "FASTAGENTIC_LLM_FAKE_TOKENS": "10",
        "FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY": "0.03",  # 0.3 s a task: kills land mid-task
        "FASTAGENTIC_REDIS_POOL_TIMEOUT": "2",
        "FASTAGENTIC_DB_CONNECT_TIMEOUT": "3",
        "FASTAGENTIC_INSTANCE_ID": "chaos",
        "FASTAGENTIC_LOG_LEVEL": "info",
    }


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report(" ".join(sys.argv), args.seconds, args.rate, args.workers)
    redis_server, pg_server = PrivateRedis(workdir), PrivatePostgres()
    process: SupervisorProcess | None = None
    try:
        redis_server.start()
        pg_server.start()
        env = environment(redis_server, pg_server)
        app_args = ["app.main:app", "-w", str(args.workers), "--app-dir", str(args.app_dir)]
        process = SupervisorProcess(workdir, app_args, env=env)
        process.wait_serving(args.workers, timeout=30)
        load = Load(process.url, args.rate)
        await asyncio.gather(
            load.run(args.seconds), chaos(args, process, redis_server, pg_server, report)
        )
        report.accepted = len(load.accepted)
        report.responses = dict(sorted(load.statuses.items()))
        report.unavailable_checks = dict(load.checks)
        report.transport_errors = load.transport_errors
        await drain(pg_server.url, load.accepted, args.drain_timeout, report)
        log = process.log()
        report.requeued = sum(
            int(line.split("Re-queued ", 1)[1].split()[0])
            for line in log.splitlines()
            if "Re-queued " in line
        )
        report.reclaimed = log.count("reclaimed task")
        if report.responses.get("500"):
            (workdir / "supervisor.log").write_text(log)
        return report
    finally:
        if process is not None:
            process.stop()
        redis_server.close()
        pg_server.close()


def show(report: Report) -> None:
    print(f"chaos run: {report.seconds:g}s at {report.rate:g} tasks/s, {report.workers} workers")
    for event in report.events:
        print(f"  {event}")
    print(f"accepted (202): {report.accepted}")
    completed = report.done + report.failed
    print(f"completed:      {completed} (done {report.done}, failed {report.failed})")
    print(f"stuck:          {sum(report.stuck.values())} {report.stuck or ''}")
    print(f"responses:      {report.responses}  503 by check: {report.unavailable_checks}")
    print(f"unanswered:     {report.transport_errors} (connections of killed workers)")
    print(f"attempts:       {report.attempts}")
    print(f"recovered:      re-queued {report.requeued}, reclaimed {report.reclaimed}")
    print(f"drained in:     {report.drain_seconds}s")
    print("RESULT:", "OK" if report.ok else "FAILED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=25.0, help="tasks per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--pg-restarts", type=int, default=2)
    parser.add_argument("--redis-restarts", type=int, default=1)
    parser.add_argument("--down", type=float, default=2.0, help="seconds a backend stays down")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="20 s, 3 kills, one of each restart")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos-tasks.json")
    parser.add_argument(
        "--app-dir", type=Path, default=REPO, help="where app/ is (e.g. an older checkout)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.kills, args.pg_restarts, args.down = 20.0, 3, 1, 1.0
    if not (PrivateRedis.available() and PrivatePostgres.available()):
        print("Error: needs redis-server and the Postgres server binaries.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="chaos-tasks-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    show(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
