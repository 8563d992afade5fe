"""Soak: hours of load, kills, rolling restarts and recycles; the supervisor must stay flat.

    .venv/bin/python loadtests/soak.py --minutes 30 --workers 4

Under continuous keep-alive load (wrk, or the bounded Python client without
it) the supervisor's workers are SIGKILLed at random, rolled with SIGHUP and
recycled by --max-requests, while its own open fd count and RSS are sampled.
The run fails (exit 1) when the supervisor's fds grow, its RSS grows by more
than --rss-slack, or it stops returning to N serving workers. Results go to
loadtests/results/soak-<timestamp>.json. The CI suite runs the bounded version
of the same checks (tests/test_chaos_e2e.py); this is the long one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "loadtests" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving_workers(supervisor: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in supervisor.children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def wait_workers(supervisor: psutil.Process, count: int, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if len(serving_workers(supervisor)) == count:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def start_load(url: str, seconds: int) -> subprocess.Popen[str]:
    if shutil.which("wrk"):
        command = ["wrk", "-t1", "-c32", f"-d{seconds}s", url]
    else:
        command = [
            sys.executable,
            str(REPO / "loadtests" / "soak.py"),
            "--python-load",
            url,
            "--minutes",
            str(seconds / 60),
        ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def python_load(url: str, seconds: float) -> None:
    """Fallback load: keep-alive requests from 8 threads, prints wrk-like totals."""
    import threading

    import httpx

    ok = failed = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        nonlocal ok, failed
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    good = client.get(url).status_code == 200
                except httpx.HTTPError:
                    good = False
                with lock:
                    ok, failed = (ok + 1, failed) if good else (ok, failed + 1)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{ok + failed} requests; Non-2xx or socket errors: {failed}")


def parse_errors(output: str) -> tuple[int, int]:
    total = int(m.group(1)) if (m := re.search(r"(\d+) requests", output)) else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(m.group(1))
    if m := re.search(r"Non-2xx or socket errors: (\d+)", output):
        errors += int(m.group(1))
    return total, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between SIGKILLs")
    parser.add_argument("--hup-every", type=float, default=60.0, help="seconds between SIGHUPs")
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--rss-slack", type=float, default=8.0, help="MiB of RSS growth allowed")
    parser.add_argument("--python-load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_load:
        python_load(args.python_load, args.minutes * 60)
        return 0

    port = free_port()
    seconds = max(10, int(args.minutes * 60))
    command = [
        sys.executable, "-m", "supervisor", "tests.apps.hello:app", "-w", str(args.workers),
        "--port", str(port), "--no-access-log", "--log-level", "warning",
        "--max-requests", str(args.max_requests), "--max-requests-jitter",
        str(args.max_requests // 10),
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    samples: list[dict[str, float]] = []
    recoveries: list[float] = []
    kills = hups = 0
    try:
        supervisor = psutil.Process(proc.pid)
        if wait_workers(supervisor, args.workers, 30) is None:
            print("the supervisor did not start its workers", file=sys.stderr)
            return 1
        load = start_load(f"http://127.0.0.1:{port}/", seconds)
        started = time.monotonic()
        next_kill, next_hup = started + args.kill_every, started + args.hup_every
        rng = random.Random(1)
        while time.monotonic() - started < seconds - 2:
            now = time.monotonic()
            samples.append(
                {
                    "t": round(now - started, 1),
                    "fds": supervisor.num_fds(),
                    "rss_mib": supervisor.memory_info().rss / 2**20,
                    "workers": len(serving_workers(supervisor)),
                }
            )
            if now >= next_kill and (workers := serving_workers(supervisor)):
                os.kill(rng.choice(workers).pid, signal.SIGKILL)
                kills += 1
                took = wait_workers(supervisor, args.workers, 10)
                recoveries.append(took if took is not None else float("inf"))
                next_kill = now + args.kill_every
            if now >= next_hup:
                proc.send_signal(signal.SIGHUP)
                hups += 1
                next_hup = now + args.hup_every
            time.sleep(1.0)
        output, _ = load.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    total, errors = parse_errors(output)
    settle = samples[len(samples) // 10 :] or samples  # after warm-up
    fds = [s["fds"] for s in settle]
    rss = [s["rss_mib"] for s in settle]
    result = {
        "minutes": args.minutes,
        "workers": args.workers,
        "kills": kills,
        "hups": hups,
        "requests": total,
        "errors": errors,
        "recovery_s_median": statistics.median(recoveries) if recoveries else None,
        "recovery_s_max": max(recoveries) if recoveries else None,
        "supervisor_fds": {"first": fds[0], "last": fds[-1], "max": max(fds)},
        "supervisor_rss_mib": {"first": round(rss[0], 1), "last": round(rss[-1], 1),
                               "max": round(max(rss), 1)},
        "exit_code": proc.returncode,
        "samples": samples,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    flat = fds[-1] <= fds[0] + 2 and rss[-1] - rss[0] <= args.rss_slack
    recovered = all(r != float("inf") for r in recoveries)
    print(f"wrote {out}; {'PASS' if flat and recovered else 'FAIL'}")
    return 0 if flat and recovered and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
