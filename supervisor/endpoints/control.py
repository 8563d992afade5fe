"""The control socket: `status`, `scale`, `reload` and `stop` talk to a running supervisor.

The supervisor listens on a Unix socket only its user can open (mode 0600,
in a 0700 directory when it picks the place itself). A client sends one JSON
line (``{"command": "status"}``, ``{"command": "scale", "workers": 6}``) and
reads one JSON document back. The supervisor answers from its own records:
the request never reaches a worker.

Where the socket lives: ``--control-socket PATH``; else beside ``--pid FILE``
(``app.pid`` -> ``app.sock``, or ``app.control.sock`` when ``app.sock`` is a
listener); else ``<pid>.sock`` in ``$XDG_RUNTIME_DIR/asgi-supervisor/``,
``/run/asgi-supervisor/`` (root) or ``$TMPDIR/asgi-supervisor-<uid>/``, which
``status`` finds by itself when one supervisor runs. A directory someone
else could write to is never used (see :mod:`supervisor.places`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import SocketAttribute

from supervisor.arbiter.lifecycle import RecycleReason
from supervisor.config import Config
from supervisor.endpoints import server as endpoint
from supervisor.errors import ConfigError
from supervisor.system import ownership, places

if TYPE_CHECKING:
    from supervisor.arbiter.arbiter import Arbiter

logger = logging.getLogger("supervisor")

REQUEST_LIMIT = 4096
CLIENT_TIMEOUT = 5.0
_PEERCRED = struct.Struct("3i")


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    command: str
    workers: int | None = None  # scale
    fast: bool = False  # stop


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


class Done(msgspec.Struct):
    """A command was carried out; ``message`` is the line the client prints."""

    message: str


class MetricsReply(msgspec.Struct):
    """The pool's Prometheus text, for a worker serving --metrics-path."""

    metrics: str


Handlers = Mapping[str, Callable[[Request], msgspec.Struct]]


def default_dir() -> Path:
    return places.default_dir()


def listener_paths(config: Config) -> list[str]:
    """The Unix socket paths the app listens on (--uds, --bind unix:PATH)."""
    paths = [item[len("unix:") :] for item in config.bind if item.startswith("unix:")]
    return [*paths, config.uds] if config.uds else paths


def socket_path(config: Config, pid: int) -> Path:
    """Where this supervisor listens for `status` (the workers ask the same)."""
    if config.control_socket:
        return Path(config.control_socket)
    if config.pid:
        return places.beside_pid(config.pid, listener_paths(config))
    return default_dir() / f"{pid}.sock"


def check_chosen_place(config: Config) -> None:
    """``--control-socket PATH`` at start: a directory others control or a
    file that is not a socket is a usage error, not a warning."""
    if not config.control_socket:
        return
    path = Path(config.control_socket)
    problem = _existing_problem(path) or _dir_problem(path.parent, places.chosen_dir_problem)
    if problem:
        raise ConfigError(f"--control-socket {path}: {problem}.")


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
    """Bind the control socket; None (and one log line) when the place is unusable."""
    try:
        problem = _place_problem(path)
    except OSError as exc:
        problem = f"cannot prepare it ({exc.strerror or exc})"
    if problem:
        logger.error(
            "Control socket %s: %s; running without it (`status`, `scale` will not work)",
            path,
            problem,
        )
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _private_umask():
            sock.bind(str(path))
        ownership.claim(path)
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        logger.warning("Control socket %s unavailable (%s); `status` will not work", path, exc)
        return None
    return sock


def _place_problem(path: Path) -> str | None:
    if path.parent == default_dir():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fix = (
            f"remove it (rm -r {path.parent}) so it is made again, or pass"
            " --control-socket PATH in a directory only you can write to"
        )
        problem = _dir_problem(path.parent, places.own_dir_problem)
        if problem:
            return f"{problem}: not trusting it; {fix}"
    else:
        problem = _dir_problem(path.parent, places.chosen_dir_problem)
        if problem:
            return f"{problem}: not trusting it; choose a directory only you (or root) can write to"
    problem = _existing_problem(path)
    if problem:
        return problem
    if path.exists():
        path.unlink()  # a socket left behind by a supervisor that was SIGKILLed
    return None


def _dir_problem(
    directory: Path, verdict: Callable[[os.stat_result, int], str | None]
) -> str | None:
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return None  # bind() will say so
    except OSError as exc:
        return f"cannot inspect {directory} ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode) and verdict is places.chosen_dir_problem:
        info = directory.stat()  # a symlink the user chose: judge where it leads
    problem = verdict(info, os.geteuid())
    return f"the directory {directory} {problem}" if problem else None


def _existing_problem(path: Path) -> str | None:
    """Never delete what is not a socket, nor a socket another process serves."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "the path exists and is not a socket; not deleting it, remove it or choose another"
    if is_live(path):
        return "another process is listening there"
    return None


def is_live(path: Path) -> bool:
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


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    pid, uid, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return pid, uid


async def _answer(client: socket.socket, handlers: Handlers) -> None:
    data = await endpoint.read_until(client, (b"\n",), REQUEST_LIMIT)
    if not data.strip():
        return  # a liveness probe (see is_live): connected and hung up
    reply: msgspec.Struct
    try:
        request = msgspec.json.decode(data.strip(), type=Request)
    except msgspec.DecodeError as exc:
        reply = ErrorReply(error=f"bad request: {exc}")
    else:
        handler = handlers.get(request.command)
        if handler is not None:
            reply = handler(request)
        else:
            reply = ErrorReply(error=f'unknown command "{request.command}"')
    await endpoint.send_all(client, msgspec.json.encode(reply) + b"\n")


# Commands ------------------------------------------------------------------------


def handlers_for(arbiter: Arbiter) -> Handlers:
    """What the control socket answers, carried out on the arbiter's loop."""

    def scale(request: Request) -> msgspec.Struct:
        if request.workers is None or request.workers < 1:
            return ErrorReply(error="scale needs a worker count of at least 1")
        if arbiter.stopping:
            return ErrorReply(error="the supervisor is stopping")
        was = arbiter.target
        refused = arbiter.set_target(request.workers)
        if refused:
            return ErrorReply(error=refused)
        logger.info("Control: scaling to %d workers (was %d)", arbiter.target, was)
        arbiter.reconcile()
        if arbiter.target == was:
            return Done(message=f"Staying at {was} workers (already the target)")
        return Done(message=f"Scaling to {arbiter.target} workers (was {was})")

    def reload(_: Request) -> msgspec.Struct:
        if arbiter.stopping:
            return ErrorReply(error="the supervisor is stopping")
        logger.info("Control: reload requested")
        arbiter.handle_hup()
        arbiter.reconcile()
        rolling = sum(w.retire_reason is RecycleReason.RELOAD for w in arbiter.workers.values())
        return Done(
            message=f"Rolling restart of {rolling} worker(s) (generation {arbiter.generation})"
        )

    def stop(request: Request) -> msgspec.Struct:
        how = (
            "fast shutdown"
            if request.fast
            else (f"draining workers (up to {arbiter.config.timeout_graceful:g}s)")
        )
        logger.info("Control: stop requested: %s", how)
        arbiter.begin_stop(fast=request.fast)
        arbiter.reconcile()
        return Done(message=f"Stopping supervisor {arbiter.pid}: {how}")

    return {
        "status": lambda _: arbiter.status(),
        "metrics": lambda _: arbiter.metrics_reply(),
        "scale": scale,
        "reload": reload,
        "stop": stop,
    }


# The worker's side (--metrics-path) ------------------------------------------------


async def fetch_metrics(path: Path) -> str:
    """Ask the supervisor for the pool's metrics (from inside a worker's event loop)."""
    with anyio.fail_after(CLIENT_TIMEOUT):
        async with await anyio.connect_unix(str(path)) as stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            peer, _ = peer_credentials(raw)
            if peer != os.getppid():
                # Not our supervisor: someone else's server at that path.
                raise RuntimeError(f"{path} is served by process {peer}, not the supervisor")
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
