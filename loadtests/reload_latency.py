"""Time from saving a file to the first response with the new code: ours vs uvicorn --reload.

    .venv/bin/python loadtests/reload_latency.py [--edits 10] [--workers 2]

Both servers watch the same kind of temp app dir; each edit changes the
version string, and a client polls with fresh connections until it sees it.
Prints a JSON summary (median, p90, max in ms) and writes it to
loadtests/results/reload_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

APP = """
VERSION = {version!r}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = VERSION.encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def version_served(url: str) -> str | None:
    try:
        with httpx.Client() as client:
            response = client.get(url, timeout=1)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def wait_version(url: str, version: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if version_served(url) == version:
            return time.monotonic() - started
        time.sleep(0.005)
    raise TimeoutError(f"{version} not served within {timeout}s")


def measure(command: list[str], app_dir: Path, port: int, edits: int) -> list[float]:
    (app_dir / "svc.py").write_text(APP.format(version="v0"))
    proc = subprocess.Popen(
        command,
        cwd=app_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    timings: list[float] = []
    try:
        wait_version(url, "v0", 20)
        time.sleep(1.0)  # let the watcher settle before the first edit
        for n in range(1, edits + 1):
            started = time.monotonic()
            (app_dir / "svc.py").write_text(APP.format(version=f"v{n}"))
            wait_version(url, f"v{n}", 20)
            timings.append(time.monotonic() - started)
            time.sleep(0.5)  # old workers finish draining; edits do not overlap
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return timings


def summary(timings: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in timings)
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
        "runs": len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, object] = {"edits": args.edits, "workers": args.workers}
    servers = {
        "supervisor": lambda port: [
            sys.executable, "-m", "supervisor", "svc:app", "--reload", "--port", str(port),
            "-w", str(args.workers), "--app-dir", ".",
        ],
        "uvicorn": lambda port: [
            sys.executable, "-m", "uvicorn", "svc:app", "--reload", "--port", str(port),
        ],
    }  # fmt: skip
    for name, command in servers.items():
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            results[name] = summary(measure(command(port), Path(tmp), port, args.edits))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reload_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
