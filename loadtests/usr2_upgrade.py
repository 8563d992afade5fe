"""Failed requests through N in-place upgrades under keep-alive load: ours vs gunicorn.

    .venv/bin/python loadtests/usr2_upgrade.py [--upgrades 3] [--workers 2] [--connections 6]

Both servers run tests/apps/hello.py (gunicorn with uvicorn-worker's
UvicornWorker), each with a pid file, under the same keep-alive load client
as the end-to-end tests (tests/load.py: one connection per thread, requests
back to back). The procedures are each server's documented one:

- asgi-supervisor: ``kill -USR2 <pid>``; the new supervisor serves, then the
  old one drains and exits by itself;
- gunicorn: ``kill -USR2 <old>``; once the new master's workers run,
  ``kill -WINCH <old>`` (its workers stop gracefully), then ``kill -QUIT <old>``.

Prints a JSON summary and writes it to loadtests/results/usr2_upgrade.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.load import KeepAliveLoad  # noqa: E402
from tests.supervisor_process import free_port  # noqa: E402

RESULTS = REPO / "loadtests" / "results"
APP = "tests.apps.hello:app"


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def workers_of(pid: int) -> set[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return {c.pid for c in psutil.Process(pid).children() if c.status() != "zombie"}
    return set()


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def ours(old: int, pid_file: Path, workers: int) -> int:
    os.kill(old, signal.SIGUSR2)
    wait(lambda: read_pid(pid_file) not in (None, old), 60, "the new supervisor's pid file")
    new = read_pid(pid_file)
    assert new is not None
    wait(lambda: len(workers_of(new)) == workers, 30, "the new supervisor's workers")
    wait(lambda: gone(old), 60, "the old supervisor to exit")
    return new


def gunicorn(old: int, pid_file: Path, workers: int) -> int:
    before = workers_of(old)
    os.kill(old, signal.SIGUSR2)
    # The new master is the old one's child (gunicorn 27 writes its pid to <pid>.2).
    masters: list[int] = []

    def new_master() -> bool:
        masters[:] = [pid for pid in workers_of(old) - before if len(workers_of(pid)) == workers]
        return bool(masters)

    wait(new_master, 60, "the new master and its workers")
    new = masters[0]
    time.sleep(1.0)  # the new workers boot (gunicorn says nothing when they serve)
    os.kill(old, signal.SIGWINCH)
    wait(lambda: not (workers_of(old) & before), 60, "the old master's workers to stop")
    os.kill(old, signal.SIGQUIT)
    wait(lambda: gone(old), 60, "the old master to exit")
    # Until it has noticed its parent is gone, the new master ignores USR2 ("Parent
    # exists"); it says so by taking the pid file's name back.
    wait(lambda: read_pid(pid_file) == new, 30, "the new master's promotion")
    return new


def run(server: str, args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        pid_file = Path(tmp) / "server.pid"
        if server == "asgi-supervisor":
            command = [sys.executable, "-m", "supervisor", APP, "-w", str(args.workers)]
            command += ["--host", "127.0.0.1", "--port", str(port), "--pid", str(pid_file)]
            command += ["--no-access-log"]
            upgrade = ours
        else:
            # The console script: on USR2 gunicorn re-executes sys.argv.
            script = str(Path(sys.executable).parent / "gunicorn")
            command = [sys.executable, script, APP, "-w", str(args.workers)]
            command += ["-k", "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{port}"]
            command += ["--pid", str(pid_file), "--no-control-socket"]
            # WINCH stops the old workers only under --daemon (else gunicorn ignores it).
            command += ["--daemon", "--error-logfile", str(Path(tmp) / "error.log")]
            upgrade = gunicorn
        log = (Path(tmp) / "log").open("wb")
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        current = proc.pid
        try:
            wait(lambda: read_pid(pid_file) is not None, 30, f"{server} to start")
            current = read_pid(pid_file) or proc.pid  # gunicorn --daemon forked
            wait(lambda: len(workers_of(current)) == args.workers, 30, f"{server} workers")
            time.sleep(1.0)
            url = f"http://127.0.0.1:{port}/"
            with KeepAliveLoad(url, connections=args.connections, max_seconds=300) as load:
                load.wait_requests(500, timeout=30)
                for _ in range(args.upgrades):
                    current = upgrade(current, pid_file, args.workers)
                    done = load.result.ok + load.result.failed
                    load.wait_requests(done + 500, timeout=30)
            result = load.result
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(current, signal.SIGTERM)
            wait(lambda: gone(current), 40, f"{server} to stop")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    return {
        "requests": result.ok + result.failed,
        "failed": result.failed,
        "errors": dict(result.errors.most_common(5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrades", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=6)
    args = parser.parse_args()
    summary: dict[str, object] = {
        "upgrades": args.upgrades,
        "workers": args.workers,
        "connections": args.connections,
    }
    for server in ("asgi-supervisor", "gunicorn"):
        summary[server] = run(server, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "usr2_upgrade.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
