"""WebSockets and streams through a rolling restart: ours vs uvicorn --workers vs gunicorn.

    .venv/bin/python loadtests/ws_drain.py [--clients 20] [--window 10] [--workers 2]
        [--stream-seconds 6] [--servers supervisor,uvicorn,gunicorn]

Each server runs tests/apps/frameworks/longlived_app.py (FastAPI) with the same
graceful timeout (the drain window). ``--clients`` WebSocket clients ping every
100 ms; one sse-starlette stream and one plain StreamingResponse run for
``--stream-seconds``; then SIGHUP goes to the server's main process. For each
server: the close codes and the time from the signal to each close, abnormal
closes (1006: no close frame), pongs after the signal, the streams completed or
cut, and the peak number of processes (main + workers) during the roll. Prints
JSON and writes loadtests/results/ws_drain.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
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
from typing import Any

import httpx
import psutil
import websockets

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
APP = "tests.apps.frameworks.longlived_app:asgi"
PING_EVERY = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(server: str, port: int, workers: int, window: float) -> list[str]:
    py = sys.executable
    if server == "supervisor":
        return [
            py,
            "-m",
            "supervisor",
            APP,
            "-w",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful",
            str(window),
            "--no-access-log",
        ]
    if server == "uvicorn":
        return [
            py,
            "-m",
            "uvicorn",
            APP,
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            str(int(window)),
            "--no-access-log",
        ]
    return [
        py,
        "-m",
        "gunicorn",
        APP,
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        str(int(window)),
    ]


async def ping_client(url: str, hup: list[float], out: list[dict[str, Any]]) -> None:
    pongs_after = 0
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            while True:
                await ws.send("ping")
                await asyncio.wait_for(ws.recv(), 5)
                if hup and time.monotonic() > hup[0]:
                    pongs_after += 1
                await asyncio.sleep(PING_EVERY)
    except websockets.ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else 1006
        at = time.monotonic() - hup[0] if hup else -1.0
        out.append({"code": code, "after_s": round(at, 3), "pongs_after": pongs_after})
    except (OSError, TimeoutError) as exc:
        at = time.monotonic() - hup[0] if hup else -1.0
        out.append(
            {
                "code": f"error {type(exc).__name__}",
                "after_s": round(at, 3),
                "pongs_after": pongs_after,
            }
        )


def read_stream(url: str, hup: list[float]) -> dict[str, Any]:
    body = ""
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            for text in response.iter_text():
                body += text
        completed = body.endswith("end\n") or "event: end" in body
        outcome = "completed" if completed else "ended early, complete body"
    except httpx.HTTPError as exc:
        outcome = f"cut ({type(exc).__name__})"
    at = time.monotonic() - hup[0] if hup else -1.0
    return {"outcome": outcome, "after_s": round(at, 3), "bytes": len(body)}


async def sample_processes(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            alive = [c for c in parent.children() if c.status() != psutil.STATUS_ZOMBIE]
            peak[0] = max(peak[0], 1 + len(alive))
        await asyncio.sleep(0.05)


def wait_ready(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/notice", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{base} not ready")


async def measure(server: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command(server, port, args.workers, args.window),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, base)
        await asyncio.sleep(1.0)  # every worker up (uvicorn/gunicorn say nothing we poll)
        hup: list[float] = []
        closes: list[dict[str, Any]] = []
        clients = [
            asyncio.ensure_future(ping_client(f"ws://127.0.0.1:{port}/ws", hup, closes))
            for _ in range(args.clients)
        ]
        streams = [
            asyncio.ensure_future(
                asyncio.to_thread(read_stream, f"{base}{path}?seconds={args.stream_seconds}", hup)
            )
            for path in ("/sse", "/stream")
        ]
        await asyncio.sleep(1.0)
        stop, peak = asyncio.Event(), [0]
        sampler = asyncio.ensure_future(sample_processes(proc.pid, stop, peak))
        hup.append(time.monotonic())
        os.kill(proc.pid, signal.SIGHUP)
        await asyncio.wait(clients, timeout=args.window + 15)
        for task in clients:
            task.cancel()
        stream_results = await asyncio.gather(*streams)
        await asyncio.sleep(1.0)
        stop.set()
        await sampler
        times = sorted(c["after_s"] for c in closes)
        return {
            "server": server,
            "close_codes": dict(collections.Counter(str(c["code"]) for c in closes)),
            "still_open": args.clients - len(closes),
            "abnormal_closes": sum(c["code"] == 1006 or isinstance(c["code"], str) for c in closes),
            "close_after_s": {"min": times[0], "median": statistics.median(times), "max": times[-1]}
            if times
            else None,
            "pongs_after_signal_median": statistics.median(c["pongs_after"] for c in closes)
            if closes
            else None,
            "sse_stream": stream_results[0],
            "plain_stream": stream_results[1],
            "peak_processes": peak[0],
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(args.window + 10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stream-seconds", type=float, default=6.0)
    parser.add_argument("--servers", default="supervisor,uvicorn,gunicorn")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results = [asyncio.run(measure(server, args)) for server in args.servers.split(",")]
    summary = {
        "clients": args.clients,
        "window_s": args.window,
        "workers": args.workers,
        "stream_seconds": args.stream_seconds,
        "results": results,
    }
    text = json.dumps(summary, indent=2)
    (RESULTS / "ws_drain.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
