"""Per-request CPU cost of the worker's HTTP path, measured in-process without sockets.

    .venv/bin/python loadtests/hotpath.py            # every variant, median of 5 x 20k requests
    .venv/bin/python loadtests/hotpath.py --requests 50000 --repeat 7 bare access-text
    .venv/bin/python loadtests/hotpath.py --instructions   # callgrind: instructions/request

A wall-clock benchmark over loopback on two shared CPUs moves by several percent
from run to run; this drives the real uvicorn protocol objects (httptools +
uvloop) with a fake transport, one keep-alive request at a time, so the
difference between two variants is the cost of what one adds. Run it under
``valgrind --tool=callgrind`` or ``py-spy record`` to see where the time goes.

Variants:
    uvicorn          uvicorn's HttpToolsProtocol + ProxyHeadersMiddleware, no access log
    uvicorn-log      the same with uvicorn's access log (logging module) to a file
    bare             the supervisor's worker protocol, every feature off (--no-access-log)
    access-text      its default access log (text) to a file
    access-json      --log-format json
    production       JSON access log, --max-concurrent, metrics, instance id, request id,
                     --slow-request-ms
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import uvicorn  # noqa: E402
import uvloop  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from loadtests.apps.hello import app as hello  # noqa: E402

REQUEST = (
    b"GET /?name=bench HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)


class FakeTransport:
    """Just enough of asyncio.Transport for uvicorn's HTTP protocols."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None
        self.closing = False
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 54321)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.written += len(chunk)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


Factory = Callable[[str], tuple[type[asyncio.Protocol], uvicorn.Config, Callable[[], None]]]


def uvicorn_variant(access_log: bool) -> Factory:
    def make(log_path: str) -> tuple[type[asyncio.Protocol], uvicorn.Config, Callable[[], None]]:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        access = logging.getLogger("uvicorn.access")
        access.handlers = []
        access.propagate = False
        if access_log:
            handler = logging.FileHandler(log_path)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            access.addHandler(handler)
            access.setLevel(logging.INFO)
        config = uvicorn.Config(hello, http=HttpToolsProtocol, log_config=None, access_log=True)
        config.load()
        return HttpToolsProtocol, config, lambda: None

    return make


def supervisor_variant(**settings: Any) -> Factory:
    def make(log_path: str) -> tuple[type[asyncio.Protocol], uvicorn.Config, Callable[[], None]]:
        from supervisor import logs
        from supervisor.config import make_config
        from supervisor.worker.assemble import observe
        from supervisor.worker.drain import DrainState
        from supervisor.worker.main import uvicorn_config

        config = make_config({"app": "loadtests.apps.hello:app", "log_file": log_path, **settings})
        logs.install(
            level="info",
            json_format=config.log_format == "json",
            instance=config.instance_id or "",
            text_instance=False,
            log_file=log_path,
            access_file=None,
            log_config=None,
        )
        uv_config = uvicorn_config(config, hello)
        observe(uv_config, config, DrainState(), os.getpid())
        return uv_config.http_protocol_class, uv_config, logs.flush_all

    return make


VARIANTS: dict[str, Factory] = {
    "uvicorn": uvicorn_variant(access_log=False),
    "uvicorn-log": uvicorn_variant(access_log=True),
    "bare": supervisor_variant(access_log=False),
    "access-text": supervisor_variant(),
    "access-json": supervisor_variant(log_format="json"),
    "production": supervisor_variant(
        log_format="json",
        max_concurrent=1000,
        metrics_bind="127.0.0.1:0",
        instance_id="bench",
        slow_request_ms=500,
    ),
}


async def drive(
    protocol_class: type[asyncio.Protocol],
    config: uvicorn.Config,
    count: int,
    connections: int = 16,
) -> float:
    """CPU microseconds per request over ``connections`` keep-alive connections taking turns
    (as under wrk: the lines of one event-loop turn are written together)."""
    state = ServerState()
    state.default_headers = [(b"date", b"Tue, 01 Dec 2026 09:00:00 GMT"), *config.encoded_headers]
    loop = asyncio.get_running_loop()
    from supervisor import logs

    for sink in logs.sinks():
        sink.loop = loop
    protocols: list[Any] = []
    for _ in range(connections):
        protocol: Any = protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state={}, _loop=loop
        )
        protocol.connection_made(FakeTransport())
        protocols.append(protocol)
    tasks = state.tasks
    rounds = max(count // connections, 1) if count else 0
    started = time.process_time()
    for _ in range(rounds):
        for protocol in protocols:
            protocol.data_received(REQUEST)
        while tasks:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the turn in which queued access lines are written
    elapsed = time.process_time() - started
    for protocol in protocols:
        protocol.connection_lost(None)
    return elapsed / max(rounds * connections, 1) * 1e6


def measure(name: str, requests: int, repeat: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = str(Path(tmp) / "access.log")
        protocol_class, config, flush = VARIANTS[name](log_path)
        results = []
        for _ in range(repeat):
            results.append(uvloop.run(drive(protocol_class, config, requests)))
            flush()
        return results


def instructions(name: str, requests: int) -> float:
    """Instructions per request under callgrind: (run of N) - (run of 0), over N."""

    def total(count: int) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "callgrind.out")
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            command += [sys.executable, __file__, name, "--requests", str(count), "--repeat", "1"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            match = re.search(r"Collected : (\d+)", result.stderr)
            if match is None:
                raise RuntimeError(f"callgrind failed:\n{result.stderr[-2000:]}")
            return int(match.group(1))

    return (total(requests) - total(0)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=", ".join(VARIANTS))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind instead"
    )
    args = parser.parse_args()
    args.variants = args.variants or list(VARIANTS)
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    base: float | None = None
    if args.instructions:
        count = min(args.requests, 3000)
        for name in args.variants:
            per_request = instructions(name, count)
            base = base or per_request
            print(
                f"{name:<12} {per_request:9.0f} instructions/request  ({per_request / base:.3f}x)"
            )
        return
    for name in args.variants:
        runs = measure(name, args.requests, args.repeat)
        median = statistics.median(runs)
        base = base or median
        print(f"{name:<12} {median:6.2f} us/request  ({median / base:.2f}x of {args.variants[0]})")


if __name__ == "__main__":
    main()
