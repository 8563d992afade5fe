"""The control socket's server: `status`, `scale`, `reload`, `stop` and the workers'
--metrics-path requests, answered on the supervisor's loop.

The supervisor listens on a Unix socket only its user can open (mode 0600,
in a 0700 directory when it picks the place itself; see
:mod:`supervisor.system.places` for where). A client sends one JSON line and
reads one JSON document back (:mod:`supervisor.commands.wire`). The server
reads the pool through a snapshot and changes it only through the
:class:`Commands` it is given: it never sees the arbiter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec

from supervisor.commands.wire import (
    REQUEST_LIMIT,
    Done,
    ErrorReply,
    MetricsReply,
    Request,
    status_of,
)
from supervisor.config import Config
from supervisor.endpoints import server as endpoint
from supervisor.errors import ConfigError
from supervisor.pool import PoolSnapshot, Reason
from supervisor.system import ownership, places
from supervisor.system.unix import is_live

logger = logging.getLogger("supervisor")


class Commands(Protocol):
    """What the control socket may read and ask (the runner wires it to the arbiter)."""

    def snapshot(self) -> PoolSnapshot: ...

    def metrics_text(self) -> str: ...

    def scale(self, workers: int) -> str | None: ...  # None, or why not

    def reload(self) -> int | None: ...  # workers replaced; None while stopping

    def stop(self, fast: bool) -> str: ...  # how


def socket_path(config: Config, pid: int) -> Path:
    """Where this supervisor listens (the workers ask the same, for --metrics-path)."""
    return places.control_socket(config.control_socket, config.pid, config.bind, config.uds, pid)


def default_dir() -> Path:
    return places.default_dir()


def check_chosen_place(config: Config) -> None:
    """``--control-socket PATH`` at start: a directory others control or a
    file that is not a socket is a usage error, not a warning."""
    if not config.control_socket:
        return
    path = Path(config.control_socket)
    problem = _existing_problem(path) or _dir_problem(path.parent, places.chosen_dir_problem)
    if problem:
        raise ConfigError(f"--control-socket {path}: {problem}.")


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


async def serve(sock: socket.socket, commands: Commands) -> None:
    async def answer(client: socket.socket) -> None:
        await _answer(client, commands)

    await endpoint.serve_each(sock, answer, "Control")


async def _answer(client: socket.socket, commands: Commands) -> None:
    data = await endpoint.read_until(client, (b"\n",), REQUEST_LIMIT)
    if not data.strip():
        return  # a liveness probe (see is_live): connected and hung up
    reply: msgspec.Struct
    try:
        request = msgspec.json.decode(data.strip(), type=Request)
    except msgspec.DecodeError as exc:
        reply = ErrorReply(error=f"bad request: {exc}")
    else:
        reply = _carry_out(commands, request)
    await endpoint.send_all(client, msgspec.json.encode(reply) + b"\n")


def _carry_out(commands: Commands, request: Request) -> msgspec.Struct:
    command = request.command
    if command == "status":
        return status_of(commands.snapshot())
    if command == "metrics":
        return MetricsReply(metrics=commands.metrics_text())
    if command == "scale":
        return _scale(commands, request)
    if command == "reload":
        replaced = commands.reload()
        if replaced is None:
            return ErrorReply(error="the supervisor is stopping")
        if replaced < 0:
            return ErrorReply(
                error="reload aborted: the configuration no longer loads (the supervisor's"
                " log says why); nothing changed"
            )
        after = commands.snapshot()
        rolling = sum(w.retiring is Reason.RELOAD for w in after.workers)
        return Done(
            message=f"Rolling restart of {rolling} worker(s) (generation {after.generation})"
        )
    if command == "stop":
        how = commands.stop(request.fast)
        return Done(message=f"Stopping supervisor {commands.snapshot().pid}: {how}")
    return ErrorReply(error=f'unknown command "{command}"')


def _scale(commands: Commands, request: Request) -> msgspec.Struct:
    if request.workers is None or request.workers < 1:
        return ErrorReply(error="scale needs a worker count of at least 1")
    before = commands.snapshot()
    if before.stopping.value != "running":
        return ErrorReply(error="the supervisor is stopping")
    refused = commands.scale(request.workers)
    if refused:
        return ErrorReply(error=refused)
    target = commands.snapshot().target
    logger.info("Control: scaling to %d workers (was %d)", target, before.target)
    if target == before.target:
        return Done(message=f"Staying at {before.target} workers (already the target)")
    return Done(message=f"Scaling to {target} workers (was {before.target})")
