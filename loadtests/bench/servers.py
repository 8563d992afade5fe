"""The servers compared, each in named profiles: the same app and worker count for all.

Profiles (``-w N``, host H, port P, APP = hello:app; nothing else unless listed):

    default      each server exactly as a user first runs it
      supervisor     python -m supervisor APP -w N --host H --port P   (access log on, info)
      gunicorn       gunicorn -k uvicorn_worker.UvicornWorker -w N -b H:P APP
      gunicorn-asgi  gunicorn -k asgi -w N -b H:P APP                 (gunicorn 27's own worker)
      uvicorn        uvicorn APP --workers N --host H --port P         (access log on)
      granian        granian --interface asgi --workers N --host H --port P APP
      hypercorn      hypercorn -w N -b H:P APP
    access-log   equal features, the access log on everywhere: ours and uvicorn as default;
                 gunicorn(-asgi) and hypercorn + --access-logfile -; granian + --access-log
    bare         ours only, the reference for a feature's cost: default + --no-access-log
    production   ours only: default + --log-format json --max-concurrent 1000
                 --metrics-bind 127.0.0.1:0 --instance-id bench --slow-request-ms 500

Scenario options add what a scenario needs (``--max-requests``, ``--preload``,
granian's ``--respawn-failed-workers`` for the kill). Loop and HTTP parser are
each server's own default (``auto``): uvloop and httptools where the server
picks them, which the report notes. Each server runs in its own session with
stdout and stderr in one log file in the run's raw/ folder (so an access line
costs a real write, the same for all); the environment is stripped of the
variables the servers read as settings; ``stop()`` TERMs the process group,
waits, then KILLs what is left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import procs

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent.parent
PROFILES = ("default", "access-log", "bare", "production")
PRODUCTION = ["--log-format", "json", "--max-concurrent", "1000", "--metrics-bind", "127.0.0.1:0"]
PRODUCTION += ["--instance-id", "bench", "--slow-request-ms", "500"]
# Settings the servers read from the environment: a stray one would change a "default".
ENV_PREFIXES = ("SUPERVISOR_", "UVICORN_", "GRANIAN_", "HYPERCORN_")
ENV_NAMES = ("GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")


@dataclass(frozen=True)
class Options:
    """What a scenario asks of a server beyond the worker count: a profile, and extras."""

    profile: str = "default"  # one of PROFILES
    preload: bool = False
    max_requests: int = 0  # with a jitter of a tenth of it
    respawn: bool = False  # the server must replace a worker that died


Argv = Callable[[str, int, int, list[str]], list[str]]  # app, port, workers, extra flags


@dataclass(frozen=True)
class Kind:
    name: str
    modules: tuple[str, ...]
    label: str
    argv: Argv
    profiles: dict[str, tuple[str, ...]]  # flags each profile adds to the default
    max_requests: tuple[str, str] | None = ("--max-requests", "--max-requests-jitter")
    preload: bool = True
    respawn: tuple[str, ...] = ()
    module: str | None = None  # what `python -m` runs the same server as

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) for module in self.modules)

    def has(self, profile: str) -> bool:
        return profile in self.profiles

    def same_as_default(self, profile: str) -> bool:
        """The profile adds nothing to this server's default (one cell serves both tables)."""
        return profile != "default" and self.profiles.get(profile) == ()

    def unsupported(self, options: Options) -> str | None:
        """Why this server cannot run ``options`` (the cell is then n/a), or None."""
        if options.preload and not self.preload:
            return f"{self.name} has no preload option"
        if options.max_requests and self.max_requests is None:
            return f"{self.name} has no request-count recycling" + (
                " (only --workers-lifetime >= 60 s)" if self.name == "granian" else ""
            )
        return None

    def command(self, app: str, port: int, workers: int, options: Options) -> list[str]:
        extra = list(self.profiles[options.profile])
        if options.max_requests and self.max_requests:
            limit, jitter = self.max_requests
            extra += [limit, str(options.max_requests), jitter, str(options.max_requests // 10)]
        if options.preload:
            extra.append("--preload")
        if options.respawn:
            extra += self.respawn
        return self.argv(app, port, workers, extra)

    def label_of(self, profile: str) -> str:
        if profile == "default" or self.same_as_default(profile):
            return self.label
        flags = " ".join(self.profiles[profile])
        return f"{self.label} ({profile})" if profile == "production" else f"{self.label} {flags}"


def _bin(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def _supervisor(app: str, port: int, workers: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "supervisor", app, "-w", str(workers), "--host", HOST]
    return [*cmd, "--port", str(port), *extra]


def _gunicorn(worker: str) -> Argv:
    def argv(app: str, port: int, workers: int, extra: list[str]) -> list[str]:
        cmd = [_bin("gunicorn"), "-k", worker, "-w", str(workers), "-b", f"{HOST}:{port}"]
        return [*cmd, *extra, app]

    return argv


def _uvicorn(app: str, port: int, workers: int, extra: list[str]) -> list[str]:
    cmd = [_bin("uvicorn"), app, "--workers", str(workers), "--host", HOST, "--port", str(port)]
    return cmd + extra


def _granian(app: str, port: int, workers: int, extra: list[str]) -> list[str]:
    cmd = [_bin("granian"), "--interface", "asgi", "--workers", str(workers), "--host", HOST]
    return [*cmd, "--port", str(port), *extra, app]


def _hypercorn(app: str, port: int, workers: int, extra: list[str]) -> list[str]:
    return [_bin("hypercorn"), "-w", str(workers), "-b", f"{HOST}:{port}", *extra, app]


ACCESS_LOGFILE = ("--access-logfile", "-")
KINDS = {
    kind.name: kind
    for kind in (
        Kind("supervisor", ("supervisor",), "asgi-supervisor", _supervisor,
             {"default": (), "access-log": (), "bare": ("--no-access-log",),
              "production": tuple(PRODUCTION)}),
        Kind("gunicorn", ("gunicorn", "uvicorn_worker"), "gunicorn + UvicornWorker",
             _gunicorn("uvicorn_worker.UvicornWorker"),
             {"default": (), "access-log": ACCESS_LOGFILE}, module="gunicorn"),
        Kind("gunicorn-asgi", ("gunicorn.workers.gasgi",), "gunicorn -k asgi", _gunicorn("asgi"),
             {"default": (), "access-log": ACCESS_LOGFILE}, module="gunicorn"),
        Kind("uvicorn", ("uvicorn",), "uvicorn --workers", _uvicorn,
             {"default": (), "access-log": ()},
             max_requests=("--limit-max-requests", "--limit-max-requests-jitter"), preload=False),
        Kind("granian", ("granian",), "granian", _granian,
             {"default": (), "access-log": ("--access-log",)},
             max_requests=None, preload=False, respawn=("--respawn-failed-workers",)),
        Kind("hypercorn", ("hypercorn",), "hypercorn", _hypercorn,
             {"default": (), "access-log": ACCESS_LOGFILE}, preload=False),
    )
}  # fmt: skip


def clean_environment(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the servers' settings, the app dir on the path."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ENV_PREFIXES) and key not in ENV_NAMES
    }
    return {**environ, "PYTHONPATH": str(cwd), **(env or {})}


def shown(command: list[str]) -> str:
    """``command`` as a shell line, paths inside the repo made relative to it."""
    prefix = str(REPO) + os.sep
    return shlex.join(arg.removeprefix(prefix) for arg in command)


class Server:
    """A running server: ``workers()`` as the OS sees them, ``answers()`` as a client does."""

    def __init__(
        self,
        kind: Kind,
        *,
        app: str,
        cwd: Path,
        workers: int,
        log: Path,
        options: Options = Options(),
        env: dict[str, str] | None = None,
        python_flags: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.profile = options.profile
        self.count = workers
        self.port = procs.free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        self.command = kind.command(app, self.port, workers, options)
        if python_flags and self.command[0] == sys.executable:
            self.command[1:1] = list(python_flags)
        elif python_flags and kind.module:  # its console script, as `python -m` (same code)
            self.command[:1] = [sys.executable, *python_flags, "-m", kind.module]
        self.started = time.monotonic()
        self.proc = procs.spawn(self.command, cwd=cwd, env=clean_environment(cwd, env), log=log)
        self.pid = self.proc.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        procs.stop(self.proc, timeout=10)

    def workers(self) -> list[psutil.Process]:
        found: list[psutil.Process] = procs.workers_of(self.pid)
        if not found and self.count == 1 and self.kind.name == "uvicorn":
            # `uvicorn --workers 1` serves in its main process: no supervisor, no children.
            with contextlib.suppress(psutil.NoSuchProcess):
                found = [psutil.Process(self.pid)]
        return found

    def answers(self, path: str = "/") -> int | None:
        """The pid of the worker that answers on a new connection (X-Worker-Pid), else None.

        A plain socket, not httpx: this is polled every 5 ms while a server starts, and
        each ``httpx.get`` makes a client and its TLS context (~23 ms of CPU here), which
        took a core from the server being timed on this 2-core machine."""
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        try:
            with socket.create_connection((HOST, self.port), timeout=2) as probe:
                probe.sendall(request.encode())
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = probe.recv(4096)
                    if not chunk:
                        break
                    head += chunk
        except OSError:
            return None
        status, _, fields = head.partition(b"\r\n")
        if status.split(b" ")[1:2] != [b"200"]:
            return None
        for field in fields.split(b"\r\n"):
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"x-worker-pid":
                return int(value) or -1
        return -1

    def wait_serving(self, timeout: float = 30.0, path: str = "/") -> float:
        """Wait until all N workers are up and one answers; seconds since start."""

        def ready() -> bool | None:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.kind.name} exited early:\n{self.tail()}")
            pids = {worker.pid for worker in self.workers()}
            return True if len(pids) >= self.count and self.answers(path) else None

        if procs.poll(ready, timeout, interval=0.05) is None:
            raise ServerFailed(f"{self.kind.name} not serving in {timeout}s:\n{self.tail()}")
        return time.monotonic() - self.started

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ServerFailed(RuntimeError):
    """A server did not start, or died; the message carries the tail of its log."""


def version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def defaults_chosen() -> dict[str, str]:
    """What each server's ``auto`` loop / HTTP parser resolves to in this interpreter."""

    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    uvloop = "uvloop" if have("uvloop") else "asyncio"
    httptools = "httptools" if have("httptools") else "h11"
    h1c = "gunicorn_h1c" if have("gunicorn_h1c") else "pure-Python parser (no gunicorn_h1c)"
    rloop = "rloop" if have("rloop") else uvloop
    return {
        "supervisor": f"{uvloop} + {httptools}",
        "gunicorn": f"{uvloop} + {httptools} (UvicornWorker: loop and http auto)",
        "gunicorn-asgi": f"{uvloop} (--asgi-loop auto) + {h1c} (--http-parser auto)",
        "uvicorn": f"{uvloop} + {httptools}",
        "granian": f"its Rust HTTP/1 + HTTP/2 server (--http auto), {rloop} (--loop auto)",
        "hypercorn": "asyncio worker (-k asyncio default) + h11",
    }


def run_quietly(command: list[str], timeout: float = 30) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
