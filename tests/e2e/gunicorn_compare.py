"""Run one gunicorn config file under real gunicorn or under the supervisor, and observe it.

``observe(server, case, certs)`` starts ``gunicorn -c FILE [-k UvicornWorker] APP`` or
``python -m supervisor --config FILE APP`` in its own session on a free port, waits
until every worker answers, makes a few requests, performs the case's actions
(SIGHUP, SIGTTIN...), stops it with SIGTERM (or the case's signal) and returns what
a user could have seen: whether it served HTTP or HTTPS, the users and titles of its
processes, the hook log (tests/gunicorn_configs/_hooklog.py), where the access lines
went, the warnings printed at start and the exit code. Every wait is bounded and
every process is reaped, a daemonized gunicorn included (found through its pid file).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.e2e.gunicorn_probes import ACTIONS, PROBES, name_of, outputs
from tests.e2e.gunicorn_setup import Certs, python_for
from tests.supervisor_process import REPO, free_port, wait_for

APP = "tests.apps.hello:app"
CONFIGS = REPO / "tests" / "gunicorn_configs"
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"
WARNING = re.compile(
    r"\[WARN(?:ING)?\]|\bWARNING\b|\bWarning: |\w+Warning: |\"level(?:name)?\": \"warn", re.I
)
ERROR = re.compile(r"\[ERROR\]|\[CRITICAL\]|\bERROR\b|Traceback \(most recent call last\)")


@dataclass(frozen=True)
class Case:
    """One config of the corpus and what the test does with it."""

    config: str  # file stem in tests/gunicorn_configs
    env: Mapping[str, str] = field(default_factory=dict)
    workers: int = 2  # how many workers gunicorn runs with it
    tls: bool = False  # the config reads CERTFILE/KEYFILE(/CA_CERTS)
    client_cert: bool = False  # mutual TLS: the test's client presents a certificate
    uds: str | None = None  # talk over this unix socket (relative to WORKDIR)
    drops_privileges: bool = False  # workers run as another user
    dirs: tuple[str, ...] = ()  # made in WORKDIR before the start
    files: Mapping[str, str] = field(default_factory=dict)  # made in WORKDIR before the start
    actions: tuple[str, ...] = ()  # hup, ttin, ttou, int_worker, abrt_worker, usr2
    stop: str = "TERM"
    probes: tuple[str, ...] = ()  # see PROBES
    compare: tuple[str, ...] = ()  # probes whose results must be equal
    titles: bool = False  # compare process titles
    starts: bool = True  # False: gunicorn refuses this config
    must_warn: str | None = None  # a regex the supervisor's start-up warnings must match
    expect: Mapping[str, Any] = field(default_factory=dict)  # facts() gunicorn must show
    not_compared: tuple[str, ...] = ()  # hook facts ("proc.gid") where gunicorn is wrong

    @property
    def path(self) -> Path:
        return CONFIGS / f"{self.config}.py"


@dataclass
class Observed:
    """What one server did with one config, as a user would have seen it."""

    server: str
    command: list[str]
    workdir: str = ""
    serves: str | None = None  # "http", "https" or None
    daemonized: bool = False
    exit_code: int | None = None
    master: dict[str, Any] = field(default_factory=dict)  # pid, user, title
    workers: list[dict[str, Any]] = field(default_factory=list)  # pid, user, group, title
    hooks: list[dict[str, Any]] = field(default_factory=list)
    segments: list[tuple[str, int]] = field(default_factory=list)  # (phase, first hook index)
    access: dict[str, list[str]] = field(default_factory=dict)  # destination -> lines
    warnings: list[str] = field(default_factory=list)  # printed before the stop signal
    errors: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)  # stream or file -> text (tail)

    def summary(self) -> str:
        data = {k: v for k, v in vars(self).items() if k not in ("hooks", "output")}
        data["hooks"] = [f"{h.get('role')}:{h['hook']}" for h in self.hooks]
        tails = {name: text[-1500:] for name, text in self.output.items()}
        return json.dumps(data, indent=1, default=str) + "\n" + json.dumps(tails, indent=1)


def command(server: str, case: Case, python: str) -> list[str]:
    config = str(case.path)
    if server == "supervisor":
        return [python, "-m", "supervisor", "--config", config, APP]
    # The console script, not -m: on SIGUSR2 gunicorn re-executes sys.argv, and
    # ".../gunicorn/__main__.py" as argv[0] would put gunicorn/http before the stdlib's http.
    script = str(Path(sys.executable).parent / "gunicorn")
    cmd = [python, script, "-c", config, "--no-control-socket"]
    if not re.search(r"^worker_class\s*=", case.path.read_text(), re.M):
        cmd += ["-k", UVICORN_WORKER]
    return [*cmd, APP]


class Client:
    """Requests to the server under test, over TCP, TLS or a unix socket."""

    def __init__(self, case: Case, port: int, workdir: Path, certs: Certs | None) -> None:
        self.case, self.port, self.workdir, self.certs = case, port, workdir, certs

    def get(self, path: str, scheme: str, **kwargs: Any) -> httpx.Response:
        verify: ssl.SSLContext | bool = False
        with_cert = kwargs.pop("with_cert", self.case.client_cert)
        if scheme == "https" and self.certs is not None:
            verify = self.certs.client_context(with_cert)
        uds = str(self.workdir / self.case.uds) if self.case.uds else None
        local = kwargs.pop("local_address", None)
        transport = httpx.HTTPTransport(uds=uds, local_address=local, verify=verify)
        with httpx.Client(transport=transport, timeout=kwargs.pop("timeout", 5)) as client:
            return client.get(f"{scheme}://127.0.0.1:{self.port}{path}", **kwargs)

    def serves(self) -> str | None:
        if self.case.uds and not (self.workdir / self.case.uds).exists():
            return None  # httpcore leaks the socket of a failed unix-socket connect
        for scheme in ("https", "http") if self.case.tls else ("http", "https"):
            with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
                if self.get("/", scheme, timeout=2).status_code == 200:
                    return scheme
        return None


class Run:
    """One started server: its processes, its output files, and how to stop it."""

    def __init__(self, server: str, case: Case, certs: Certs | None) -> None:
        self.server, self.case = server, case
        self.workdir = Path(tempfile.mkdtemp(prefix=f"corpus-{server}-"))
        self.workdir.chmod(0o777)  # hooks in workers that run as nobody append to it
        self.hook_log = self.workdir / "hooks.jsonl"
        self.hook_log.touch(mode=0o666)
        self.hook_log.chmod(0o666)
        for name in case.dirs:
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        for name, text in case.files.items():
            (self.workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.workdir / name).write_text(text)
        self.port = free_port()
        self.client = Client(case, self.port, self.workdir, certs)
        self.token = "corpus-" + secrets.token_hex(6)
        self.observed = Observed(server, command(server, case, python_for(case)))
        self.observed.workdir = str(self.workdir)
        self.pgids: set[int] = set()
        self.master = 0

    def env(self, certs: Certs | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "SUPERVISOR_"))}
        env.pop("WEB_CONCURRENCY", None)
        env.update(PYTHONUNBUFFERED="1", HOOK_LOG=str(self.hook_log), WORKDIR=str(self.workdir))
        env.update(BIND=f"127.0.0.1:{self.port}", HOST="127.0.0.1", PORT=str(self.port))
        env.update(PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "prometheus"))
        (self.workdir / "prometheus").mkdir(mode=0o777, exist_ok=True)
        env.update(certs.env() if certs else {})
        env.update(self.case.env)
        return env

    def start(self, certs: Certs | None) -> None:
        self.stdout = (self.workdir / "stdout").open("wb")
        self.stderr = (self.workdir / "stderr").open("wb")
        self.proc = subprocess.Popen(
            self.observed.command,
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env(certs),
            cwd=REPO,
        )
        self.master = self.proc.pid
        self.pgids.add(self.proc.pid)

    def alive(self) -> bool:
        if self.master == self.proc.pid:
            return self.proc.poll() is None
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.master).status() != psutil.STATUS_ZOMBIE
        return False

    def follow_daemon(self) -> bool:
        """gunicorn -D: the command exits 0 at once; the master is in the pid file."""
        pidfile = self.workdir / "app.pid"
        if self.proc.poll() != 0:
            return False
        with contextlib.suppress(AssertionError):
            wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pid file")
        with contextlib.suppress(ValueError, OSError, psutil.NoSuchProcess):
            self.master = int(pidfile.read_text().strip())
            self.pgids.add(os.getpgid(self.master))
            self.observed.daemonized = True
            return True
        return False

    def workers(self) -> set[int]:
        found: set[int] = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.master).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    title = " ".join(child.cmdline())
                    if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in title:
                        found.add(child.pid)
        return found

    def wait_serving(self, timeout: float = 25.0) -> bool:
        """Until every worker answers (or the server gave up); False if it never served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive() and not self.follow_daemon():
                return False
            scheme = self.client.serves()
            if scheme and len(self.workers()) >= self.case.workers:
                self.observed.serves = scheme
                with contextlib.suppress(AssertionError):
                    self.wait_answering(self.workers(), deadline - time.monotonic())
                return True
            time.sleep(0.1)
        return False

    def wait_answering(self, want: set[int], timeout: float) -> None:
        scheme = self.observed.serves or "http"
        seen: set[int] = set()

        def one(_: int) -> int | None:
            with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError, KeyError, ValueError):
                return int(self.client.get("/sleep?s=0.05", scheme).headers["x-worker-pid"])
            return None

        def enough() -> bool:
            with ThreadPoolExecutor(8) as pool:
                seen.update(pid for pid in pool.map(one, range(16)) if pid)
            return want <= seen

        wait_for(enough, max(timeout, 1.0), f"workers {want} answering; saw {seen}")

    def wait_workers(self, ok: Callable[[set[int]], bool], timeout: float = 20.0) -> None:
        """Until ``ok(workers)`` holds for 0.5 s, then every one of them answers."""
        stable_since: float | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            pids = self.workers()
            if ok(pids):
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 0.5:
                    with contextlib.suppress(AssertionError):
                        self.wait_answering(pids, deadline - time.monotonic())
                    return
            else:
                stable_since = None
            time.sleep(0.1)

    def hook_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.hook_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def mark(self, phase: str) -> None:
        self.observed.segments.append((phase, len(self.hook_entries())))

    def reap(self) -> None:
        """Always: TERM every session we started (and the daemon's), wait, KILL what is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.pgids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10 if sig == signal.SIGTERM else 5)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not self._session_left(), 10, "session gone")
        self.stdout.close()
        self.stderr.close()

    def _session_left(self) -> bool:
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if process.status() != psutil.STATUS_ZOMBIE and (
                    os.getpgid(process.pid) in self.pgids
                ):
                    return True
        return False


def observe(server: str, case: Case, certs: Certs | None = None) -> Observed:
    """Start, serve, act, stop and reap one server with ``case``'s config; what was seen."""
    run = Run(server, case, certs)
    run.start(certs)
    try:
        _exercise(run)
    finally:
        run.reap()
        _collect(run)
        shutil.rmtree(run.workdir, ignore_errors=True)
    return run.observed


def _exercise(run: Run) -> None:
    observed, case = run.observed, run.case
    if not run.wait_serving():
        run.mark("stop")
        with contextlib.suppress(subprocess.TimeoutExpired):
            observed.exit_code = run.proc.wait(15)
        run.sizes = _sizes(run)
        return
    run.mark("start")
    run.sizes = _sizes(run)
    observed.master = _process(run.master)
    observed.workers = [_process(pid) for pid in sorted(run.workers())]
    for _ in range(3):
        with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
            run.client.get(f"/?probe={run.token}", observed.serves or "http")
    for name in case.probes:
        observed.probes[name] = PROBES[name](run)
    for action in case.actions:
        run.mark(action)
        ACTIONS[action](run)
    run.mark("stop")
    if run.alive():
        os.kill(run.master, getattr(signal, "SIG" + case.stop))
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not run.alive(), 40, "server stopped")
    if not observed.daemonized:
        with contextlib.suppress(subprocess.TimeoutExpired):
            observed.exit_code = run.proc.wait(5)


def _sizes(run: Run) -> dict[Path, int]:
    return {path: path.stat().st_size for path in outputs(run.workdir)}


def _collect(run: Run) -> None:
    observed = run.observed
    observed.hooks = run.hook_entries()
    sizes = getattr(run, "sizes", {})
    for path in outputs(run.workdir):
        name = path.name if path.name in ("stdout", "stderr") else f"file:{path.name}"
        data = path.read_bytes()
        text = data.decode(errors="replace")
        observed.output[name] = text
        boot = data[: sizes.get(path, len(data))].decode(errors="replace")
        observed.warnings += [
            line
            for line in boot.splitlines()
            # Per request, not start-up: a plain-HTTP server answering the test's TLS probe
            # (where "serves" tells already), or a stray client on a reused port.
            if WARNING.search(line) and "Invalid HTTP request" not in line
        ]
        observed.errors += [line for line in boot.splitlines() if ERROR.search(line)]
        lines = [line for line in text.splitlines() if run.token in line]
        if lines:
            observed.access[name] = lines


def _process(pid: int) -> dict[str, Any]:
    try:
        process = psutil.Process(pid)
        uid, gid = process.uids().effective, process.gids().effective
        with open(f"/proc/{pid}/status") as status:
            umask = next((ln.split()[1] for ln in status if ln.startswith("Umask:")), "?")
        title = " ".join(process.cmdline()).strip()
    except (psutil.NoSuchProcess, OSError):
        return {"pid": pid, "gone": True}
    return {
        "pid": pid,
        "user": name_of(uid),
        "uid": uid,
        "gid": gid,
        "umask": umask,
        "title": title,
    }
