"""The control socket: `python -m supervisor status` asks a running supervisor for its workers.

The supervisor listens on a Unix socket only its user can open (mode 0600,
in a 0700 directory when it picks the place itself). A client sends one JSON
line (``{"command": "status"}``) and reads one JSON document back. The
supervisor answers from its own records: the request never reaches a worker.

Where the socket lives: ``--control-socket PATH``; else beside ``--pid FILE``
(``app.pid`` -> ``app.sock``); else ``$TMPDIR/asgi-supervisor-<uid>/<pid>.sock``,
which ``status`` finds by itself when one supervisor runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from supervisor import endpoint
from supervisor.config import Config, format_size

if TYPE_CHECKING:
    from supervisor.arbiter import Arbiter

logger = logging.getLogger("supervisor")

REQUEST_LIMIT = 4096
CLIENT_TIMEOUT = 5.0


class Request(msgspec.Struct, forbid_unknown_fields=True):
    command: str


class WorkerStatus(msgspec.Struct):
    pid: int
    generation: int
    state: str
    age_s: float
    requests: int
    in_flight: int
    connections: int
    rss_bytes: int
    last_beat_s: float
    retiring: str | None


class Totals(msgspec.Struct):
    workers: int
    requests: int
    in_flight: int
    rss_bytes: int
    restarts: dict[str, int]


class Status(msgspec.Struct):
    pid: int
    app: str
    instance_id: str
    uptime_s: float
    target_workers: int
    generation: int
    stopping: str | None
    workers: list[WorkerStatus]
    totals: Totals


class ErrorReply(msgspec.Struct):
    error: str


class MetricsReply(msgspec.Struct):
    """The pool's Prometheus text, for a worker serving --metrics-path."""

    metrics: str


Handlers = Mapping[str, Callable[[], msgspec.Struct]]


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"asgi-supervisor-{os.getuid()}"


def socket_path(config: Config, pid: int) -> Path:
    """Where this supervisor listens for `status`."""
    if config.control_socket:
        return Path(config.control_socket)
    if config.pid:
        return Path(config.pid).with_suffix(".sock")
    return default_dir() / f"{pid}.sock"


def build_status(arbiter: Arbiter, now: float) -> Status:
    workers = [
        WorkerStatus(
            pid=w.pid,
            generation=w.generation,
            state=w.state.value,
            age_s=round(w.age(now), 3),
            requests=w.requests,
            in_flight=w.in_flight,
            connections=w.connections,
            rss_bytes=w.rss,
            last_beat_s=round(now - w.last_beat, 3),
            retiring=str(w.retire_reason) if w.retire_reason else None,
        )
        for w in sorted(arbiter.workers.values(), key=lambda w: w.started_at)
    ]
    totals = Totals(
        workers=sum(1 for w in arbiter.workers.values() if w.live),
        requests=arbiter.exited_requests + sum(w.requests for w in workers),
        in_flight=sum(w.in_flight for w in workers),
        rss_bytes=sum(w.rss_bytes for w in workers),
        restarts=dict(sorted(arbiter.restarts.items())),
    )
    return Status(
        pid=arbiter.pid,
        app=arbiter.config.app,
        instance_id=arbiter.config.instance_id or "",
        uptime_s=round(now - arbiter.started_at, 3),
        target_workers=arbiter.target,
        generation=arbiter.generation,
        stopping=arbiter.stopping,
        workers=workers,
        totals=totals,
    )


# Server (in the supervisor) ---------------------------------------------------


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    # The socket file is created by bind(); a 0177 umask makes it 0600 from the start.
    old = os.umask(0o177)
    try:
        yield None
    finally:
        os.umask(old)


def open_control_socket(path: Path) -> socket.socket | None:
    """Bind the control socket; None (and a warning) when the place is unusable."""
    try:
        if path.parent == default_dir():
            path.parent.mkdir(mode=0o700, exist_ok=True)
        if path.exists() and not _is_live(path):
            path.unlink()  # left behind by a supervisor that was SIGKILLed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _private_umask():
            sock.bind(str(path))
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        logger.warning("Control socket %s unavailable (%s); `status` will not work", path, exc)
        return None
    return sock


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


async def serve(sock: socket.socket, handlers: Handlers) -> None:
    async def answer(client: socket.socket) -> None:
        await _answer(client, handlers)

    await endpoint.serve_each(sock, answer, "Control")


async def _answer(client: socket.socket, handlers: Handlers) -> None:
    data = await endpoint.read_until(client, (b"\n",), REQUEST_LIMIT)
    if not data.strip():
        return  # a liveness probe (see _is_live): connected and hung up
    reply: msgspec.Struct
    try:
        request = msgspec.json.decode(data.strip(), type=Request)
    except msgspec.DecodeError as exc:
        reply = ErrorReply(error=f"bad request: {exc}")
    else:
        handler = handlers.get(request.command)
        if handler is not None:
            reply = handler()
        else:
            reply = ErrorReply(error=f'unknown command "{request.command}"')
    await endpoint.send_all(client, msgspec.json.encode(reply) + b"\n")


# Client (`python -m supervisor status`) ----------------------------------------


def query(path: Path, command: str = "status", timeout: float = CLIENT_TIMEOUT) -> Status:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(msgspec.json.encode(Request(command=command)) + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    reply = msgspec.json.decode(data)
    if isinstance(reply, dict) and "error" in reply:
        raise RuntimeError(str(reply["error"]))
    return msgspec.convert(reply, Status)


async def fetch_metrics(path: Path) -> str:
    """Ask the supervisor for the pool's metrics (from inside a worker's event loop)."""
    with anyio.fail_after(CLIENT_TIMEOUT):
        async with await anyio.connect_unix(str(path)) as stream:
            await stream.send(msgspec.json.encode(Request(command="metrics")) + b"\n")
            chunks = []
            try:
                while True:
                    chunks.append(await stream.receive())
            except anyio.EndOfStream:
                pass
    reply = msgspec.json.decode(b"".join(chunks))
    if not isinstance(reply, dict) or not isinstance(reply.get("metrics"), str):
        raise RuntimeError(f"unexpected reply from the supervisor: {reply!r}")
    text: str = reply["metrics"]
    return text


def find_socket(args: argparse.Namespace) -> Path:
    if args.control_socket:
        return Path(args.control_socket)
    if args.pid:
        return Path(args.pid).with_suffix(".sock")
    candidates = sorted(default_dir().glob("*.sock")) if default_dir().is_dir() else []
    live = [path for path in candidates if _is_live(path)]
    if len(live) == 1:
        return live[0]
    if not live:
        raise LookupError("No running supervisor found; pass --pid FILE or --control-socket PATH.")
    names = ", ".join(str(path) for path in live)
    raise LookupError(f"Several supervisors are running ({names}); pass --control-socket PATH.")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(status: Status) -> str:
    lines = [
        f"supervisor {status.pid}  app {status.app}  instance {status.instance_id}  "
        f"up {_age(status.uptime_s)}  workers {status.totals.workers}/{status.target_workers}"
        f"  generation {status.generation}"
        + (f"  STOPPING ({status.stopping})" if status.stopping else ""),
        "",
        f"{'PID':>8}  {'GEN':>3}  {'STATE':<9}  {'AGE':>7}  {'REQUESTS':>9}  {'IN-FLIGHT':>9}  "
        f"{'RSS':>10}  NOTE",
    ]
    for w in status.workers:
        note = f"retiring: {w.retiring}" if w.retiring else ""
        lines.append(
            f"{w.pid:>8}  {w.generation:>3}  {w.state:<9}  {_age(w.age_s):>7}  {w.requests:>9}  "
            f"{w.in_flight:>9}  {format_size(w.rss_bytes):>10}  {note}".rstrip()
        )
    restarts = ", ".join(f"{k} {v}" for k, v in status.totals.restarts.items()) or "none"
    lines += [
        "",
        f"total: {status.totals.requests} requests served, {status.totals.in_flight} in flight, "
        f"RSS {format_size(status.totals.rss_bytes)}; restarts: {restarts}",
    ]
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor status",
        description="Show the workers of a running supervisor.",
    )
    parser.add_argument("--json", action="store_true", help="Print the status as JSON.")
    parser.add_argument("--pid", metavar="FILE", help="The supervisor's --pid file.")
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        default=os.environ.get("SUPERVISOR_CONTROL_SOCKET"),
        help="The supervisor's control socket.",
    )
    args = parser.parse_args(argv)
    try:
        path = find_socket(args)
    except LookupError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    try:
        status = query(path)
    except (OSError, RuntimeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"Error: cannot query the supervisor at {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(status)).decode() + "\n")
    else:
        print(render(status))
    return 0
