"""Run the real supervisor in a subprocess and read its story from the log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

_SERVING = re.compile(r"Worker (\d+) serving")
_GONE = re.compile(r"Worker (\d+) (?:stopped|died|failed to boot|exited on its own)")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor ARGS`` to its end, from the repo, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def status_json(*where: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m supervisor status --json`` (``where``: --pid or --control-socket), parsed."""
    done = run_cli("status", *where, "--json", env=env)
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None], timeout: float, message: str = "", interval: float = 0.02
) -> T:
    """Poll until predicate() is truthy; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


def _apply_rlimits(rlimits: dict[int, tuple[int, int]]) -> None:
    for which, limits in rlimits.items():
        resource.setrlimit(which, limits)


class LoggedProcess:
    """A command in its own session, logging to a file; ``stop`` always reaps it."""

    name = "process"

    def _start(
        self,
        command: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        rlimits: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=REPO,
            # Only setrlimit runs between fork and exec: safe despite test threads.
            preexec_fn=(lambda: _apply_rlimits(rlimits)) if rlimits else None,  # noqa: PLW1509
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{self.name} still running after {timeout}s:\n{self.log()}"
            ) from exc

    def stop(self) -> None:
        """Always called: TERM the whole session, wait, then KILL what is left."""
        if self.proc.poll() is None:
            self._killpg(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._killpg(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._log.close()

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


class SupervisorProcess(LoggedProcess):
    """``python -m supervisor`` in its own session, logging to a file."""

    name = "supervisor"

    def __init__(
        self,
        tmp_path: Path,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        rlimits: dict[int, tuple[int, int]] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "supervisor", *args]
        if "--port" not in args and not any(a.startswith(("-b", "--bind", "--uds")) for a in args):
            command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if "--app-dir" not in args:
            command += ["--app-dir", str(REPO)]
        self._start(command, tmp_path / f"supervisor-{self.port}.log", env, rlimits)

    def serving_pids(self) -> set[int]:
        serving: set[int] = set()
        for line in self.log().splitlines():
            if match := _SERVING.search(line):
                serving.add(int(match.group(1)))
            elif match := _GONE.search(line):
                serving.discard(int(match.group(1)))
        return serving

    def children(self) -> set[int]:
        try:
            return {c.pid for c in psutil.Process(self.pid).children() if c.status() != "zombie"}
        except psutil.NoSuchProcess:
            return set()

    def wait_serving(self, count: int, timeout: float = 10.0) -> set[int]:
        def ready() -> set[int] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited early:\n{self.log()}")
            pids = self.serving_pids()
            return pids if len(pids) == count and self.children() == pids else None

        return wait_for(ready, timeout, message=f"{count} workers serving\n{self.log()}")

    def get(self, path: str = "/", **kwargs: object) -> httpx.Response:
        kwargs.setdefault("timeout", 10)
        return httpx.get(self.url + path, **kwargs)  # type: ignore[arg-type]
