"""Keep-alive load: wrk when installed, else a bounded asyncio client that counts the same things.

Both run in the background (``Load.start()``), can be stopped early (wrk takes
SIGINT and still prints its summary) and give a ``LoadResult``: requests,
requests/s, the latency distribution and the errors, split the way wrk splits
them (connect/read/write/timeout socket errors, and non-2xx/3xx responses).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import procs

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
ERROR_KINDS = ("connect", "read", "write", "timeout", "non2xx")
MAX_REQUESTS = 5_000_000  # the Python client's hard cap, whatever the duration
REQUEST_TIMEOUT = 2.0  # wrk's default --timeout: a slower answer is a timeout error


@dataclass
class LoadResult:
    tool: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Failed requests: every socket error plus every non-2xx/3xx response."""
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


def wrk_version() -> str | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    return out.split(" Copyright")[0].strip() or "wrk"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * UNITS[match[2]]


def parse_wrk(text: str) -> LoadResult:
    """Parse wrk's summary (with ``--latency``, and whatever a Lua ``done()`` printed)."""
    result = LoadResult(tool="wrk")
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    if not done:
        raise ValueError(f"no wrk summary in:\n{text}")
    result.requests = int(done[1])
    result.seconds = _ms(done[2]) / 1000
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result.rps = float(rps[1]) if rps else 0.0
    for pct, value in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", text, re.MULTILINE):
        result.latency_ms[f"p{pct}"] = round(_ms(value), 3)
    stats = re.search(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", text)
    if stats:
        result.latency_ms["avg"] = round(_ms(stats[1]), 3)
        result.latency_ms["max"] = round(_ms(stats[3]), 3)
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        for kind, value in zip(ERROR_KINDS, sock.groups(), strict=False):
            result.errors[kind] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result.errors["non2xx"] = int(non2xx[1]) if non2xx else 0
    for key, value in re.findall(r"^EXTRA (\w+)=(\d+)$", text, re.MULTILINE):
        result.extra[key] = int(value)
    return result


class Load:
    """``Load(url, ...).start()``, then ``result()`` (waits) or ``stop()`` then ``result()``."""

    def __init__(
        self,
        url: str,
        *,
        connections: int,
        seconds: float,
        log: Path,
        mode: str = "get",
        tool: str = "wrk",
    ) -> None:
        self.url = url
        self.connections = connections
        self.seconds = seconds
        self.log = log
        self.mode = mode  # "get": GET url; "agent": POST /agent then GET /result/{id}
        self.tool = tool if tool != "wrk" or shutil.which("wrk") else "python"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: PythonClient | None = None

    def start(self) -> Load:
        if self.tool == "wrk":
            command = ["wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(self.seconds))}s"]
            command.append("--latency")
            if self.mode == "agent":
                command += ["-s", str(Path(__file__).with_name("agent.lua"))]
            self.log.write_text("")
            self._proc = procs.spawn(
                [*command, self.url], cwd=self.log.parent, env=dict(os.environ), log=self.log
            )
        else:
            self._client = PythonClient(self.url, self.connections, self.seconds, self.mode)
            self._client.start()
        return self

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._client is not None and self._client.is_alive()

    def stop(self) -> None:
        """End the load now (wrk still prints its summary on SIGINT)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
        if self._client is not None:
            self._client.stop_event.set()

    def result(self, timeout: float | None = None) -> LoadResult:
        timeout = timeout if timeout is not None else self.seconds + 15
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
            procs.stop(self._proc, timeout=5)
            return parse_wrk(self.log.read_text())
        assert self._client is not None
        self._client.join(timeout)
        result = self._client.result()
        self.log.write_text(repr(result.as_dict()) + "\n")
        return result


class PythonClient(threading.Thread):
    """wrk's job in asyncio: one request at a time on each keep-alive connection, bounded."""

    def __init__(self, url: str, connections: int, seconds: float, mode: str) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.connections, self.seconds, self.mode = connections, seconds, mode
        self.stop_event = threading.Event()
        self.latencies = array("d")
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.extra = {"accepted": 0, "results": 0} if mode == "agent" else {}
        self.elapsed = 0.0

    def run(self) -> None:
        started = time.monotonic()
        asyncio.run(self._main(started + self.seconds))
        self.elapsed = time.monotonic() - started

    def result(self) -> LoadResult:
        ms = sorted(self.latencies)
        result = LoadResult(tool="python", requests=len(ms), seconds=round(self.elapsed, 3))
        result.rps = round(len(ms) / self.elapsed, 1) if self.elapsed else 0.0
        if ms:
            for pct in (50, 75, 90, 99):
                result.latency_ms[f"p{pct}"] = round(ms[min(len(ms) - 1, len(ms) * pct // 100)], 3)
            result.latency_ms["avg"] = round(sum(ms) / len(ms), 3)
            result.latency_ms["max"] = round(ms[-1], 3)
        result.errors = dict(self.errors)
        result.extra = dict(self.extra)
        return result

    async def _main(self, deadline: float) -> None:
        await asyncio.gather(*(self._connection(deadline) for _ in range(self.connections)))

    def _request(self, task_id: str | None) -> bytes:
        host = f"Host: {self.host}:{self.port}\r\n"
        if self.mode != "agent":
            return f"GET {self.path} HTTP/1.1\r\n{host}\r\n".encode()
        if task_id:
            return f"GET /result/{task_id} HTTP/1.1\r\n{host}\r\n".encode()
        body = b'{"prompt": "hello"}'
        head = f"POST /agent HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        head += f"X-User-Id: loadtest\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    async def _connection(self, deadline: float) -> None:
        task_id: str | None = None
        while time.monotonic() < deadline and not self.stop_event.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.errors["connect"] += 1
                await asyncio.sleep(0.01)
                continue
            try:
                task_id = await self._requests(reader, writer, deadline, task_id)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
        task_id: str | None,
    ) -> str | None:
        """Requests on one connection until it closes; returns the task id still to fetch."""
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if len(self.latencies) >= MAX_REQUESTS:
                self.stop_event.set()
                break
            started = time.monotonic()
            try:
                writer.write(self._request(task_id))
                await writer.drain()
            except OSError:
                self.errors["write"] += 1
                return task_id
            try:
                status, body, keep_alive = await asyncio.wait_for(
                    read_response(reader), REQUEST_TIMEOUT
                )
            except TimeoutError:
                self.errors["timeout"] += 1
                return task_id
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.errors["read"] += 1
                return task_id
            self.latencies.append((time.monotonic() - started) * 1000)
            if status >= 400:
                self.errors["non2xx"] += 1
            task_id = self._follow(status, body, task_id)
            if not keep_alive:
                break
        return task_id

    def _follow(self, status: int, body: bytes, task_id: str | None) -> str | None:
        if self.mode != "agent":
            return None
        if status == 202:
            self.extra["accepted"] += 1
            match = re.search(rb'"task_id"\s*:\s*"([^"]+)"', body)
            return match[1].decode() if match else None
        if task_id and status == 200:
            self.extra["results"] += 1
        return None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: (status, body, whether the connection stays open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            chunks.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")
        body = b"".join(chunk[:-2] for chunk in chunks)
    else:
        return status, await reader.read(), False
    return status, body, headers.get("connection") != "close"
