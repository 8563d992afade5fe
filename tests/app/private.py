"""Backends of a test's own, to cut and restore: a redis-server and a Postgres cluster.

The shared Redis (6379) and Postgres (5432) serve everybody's tests, so a test
that restarts a backend starts its own on a free port: ``PrivateRedis`` runs
without persistence (a restart loses every key, as FLUSHALL would) and
``PrivatePostgres`` is a fresh ``initdb`` cluster in a temporary directory (as
the ``postgres`` OS user when we are root: Postgres refuses to run as root).
Each process runs in its own session, and ``close`` always reaps it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_SECONDS = 30.0
STOP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def _reap(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class PrivateRedis:
    """``redis-server`` on a free port, no RDB, no AOF: every restart starts empty."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        assert self.binary is not None, "redis-server is not installed"
        self.starts += 1
        log = (self.workdir / f"redis-{self.port}-{self.starts}.log").open("wb")
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: nothing is saved, whatever the configuration (a crash)."""
        _reap(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def close(self) -> None:
        self.stop()


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=_version_key)
    if found:
        return found[-1].parent
    binary = shutil.which("postgres")
    return Path(binary).resolve().parent if binary else None


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class PrivatePostgres:
    """A throwaway cluster (trust auth) on a free port; ``restart`` is a fast shutdown + start."""

    def __init__(self) -> None:
        bindir = _postgres_bindir()
        assert bindir is not None, "Postgres server binaries are not installed"
        self.bindir = bindir
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # Not under pytest's tmp_path: that is private to root, and the server may not be.
        self.root = Path(tempfile.mkdtemp(prefix="fastagentic-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self._initdb()

    @staticmethod
    def available() -> bool:
        if _postgres_bindir() is None:
            return False
        if os.geteuid() != 0:
            return True
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return True

    def _initdb(self) -> None:
        argv = [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U"]
        argv += ["postgres", "--no-sync", "-E", "UTF8", "--no-instructions"]
        done = subprocess.run(argv, capture_output=True, timeout=120, **self._as)
        if done.returncode != 0:
            raise AssertionError(f"initdb failed: {done.stderr.decode(errors='replace')}")

    def start(self) -> None:
        self.starts += 1
        log = (self.root / f"postgres-{self.starts}.log").open("wb")
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += ["-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        argv += ["-c", "max_connections=200", "-c", "synchronous_commit=off"]
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"postgres on {self.port} did not start:\n{self.log()}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        ready = self.bindir / "pg_isready"
        if not ready.exists():
            return _answers(self.port)
        argv = [str(ready), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(argv, timeout=10).returncode == 0

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are cut, as in a restart for maintenance."""
        _reap(self.proc, signal.SIGINT)
        self.proc = None

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
