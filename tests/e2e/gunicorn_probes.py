"""What the corpus test does to a running server beyond plain requests: probes and actions.

A probe measures what a setting changes that the hook log and the access log do not
show (a limit's status code, the client address behind a proxy, a socket's mode); an
action is a signal a user sends (SIGHUP, SIGTTIN, SIGINT to a worker...) and waits,
bounded, for its effect. Both take the ``Run`` of tests/e2e/gunicorn_compare.py.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.supervisor_process import wait_for

if TYPE_CHECKING:
    from tests.e2e.gunicorn_compare import Run

FORWARDED_FOR = "203.0.113.9"
PROXY_PEER = "127.0.0.2"  # a loopback peer that is not 127.0.0.1, so not trusted by default


def outputs(workdir: Path) -> Iterator[Path]:
    for path in sorted(workdir.rglob("*")):
        skip = path.name in ("hooks.jsonl",) or path.suffix in (".sock", ".db", ".pid")
        if path.is_file() and not skip and "prometheus" not in path.parts:
            yield path


def name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# Probes: what a setting changes that the hook log and the access log do not show ---------


def _status(run: Run, path: str, **kwargs: Any) -> Any:
    try:
        return run.client.get(path, run.observed.serves or "http", **kwargs).status_code
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        return type(exc).__name__


def _refused(status: Any) -> Any:
    """A handshake refusal surfaces as one of several httpx errors, depending on timing."""
    return status if isinstance(status, int) else "connection refused"


def _forwarded(run: Run) -> str:
    token = run.token + "-fwd"
    headers = {"X-Forwarded-For": FORWARDED_FOR}
    with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
        run.client.get(f"/?probe={token}", run.observed.serves or "http", headers=headers,
                       local_address=PROXY_PEER)  # fmt: skip
    deadline = time.monotonic() + 3  # access lines are written in batches
    while time.monotonic() < deadline:
        for path in outputs(run.workdir):
            for line in path.read_text(errors="replace").splitlines():
                if token in line:
                    return "forwarded client" if FORWARDED_FOR in line else "peer address"
        time.sleep(0.1)
    return "no access line"


def _socket_mode(run: Run) -> str:
    info = (run.workdir / (run.case.uds or "app.sock")).stat()
    return f"{oct(info.st_mode & 0o777)} {name_of(info.st_uid)}"


def _server_header(run: Run) -> str:
    try:
        return run.client.get("/", run.observed.serves or "http").headers.get("server", "<none>")
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        return type(exc).__name__


PROBES: dict[str, Callable[[Run], Any]] = {
    "long_request_line": lambda run: _status(run, "/?pad=" + "a" * 2000),
    "many_headers": lambda run: _status(run, "/", headers={f"x-h{i}": "1" for i in range(40)}),
    "large_header": lambda run: _status(run, "/", headers={"x-big": "b" * 1000}),
    "forwarded": _forwarded,
    "blocked_3s_with_timeout": lambda run: _status(run, "/block?s=3", timeout=15),
    "env_APP_MODE": lambda run: run.client.get("/env?name=APP_MODE", "http").text,
    "without_client_cert": lambda run: _refused(_status(run, "/", with_cert=False)),
    "socket_mode": _socket_mode,
    "server_header": _server_header,
}


# Actions --------------------------------------------------------------------------------


def _replace_one(run: Run, sig: signal.Signals) -> None:
    before = run.workers()
    if not before:
        return
    victim = min(before)
    os.kill(victim, sig)
    run.wait_workers(lambda pids: victim not in pids and len(pids) == len(before), timeout=10)


def _hup(run: Run) -> None:
    old = run.workers()
    os.kill(run.master, signal.SIGHUP)
    # gunicorn goes back to the config's worker count on SIGHUP, after TTIN/TTOU too.
    run.wait_workers(lambda pids: bool(pids) and not pids & old, timeout=30)


def _scale(run: Run, sig: signal.Signals, delta: int) -> None:
    want = len(run.workers()) + delta
    os.kill(run.master, sig)
    run.wait_workers(lambda pids: len(pids) == want)


def _usr2(run: Run) -> None:
    os.kill(run.master, signal.SIGUSR2)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: any(h["hook"] == "pre_exec" for h in run.hook_entries()), 10, "pre_exec")
    time.sleep(3)  # the new master boots its workers beside the old ones


def _recycle(run: Run) -> None:
    """Requests until max_requests retires a worker and a new one serves (at most 300)."""
    old = run.workers()
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
            run.client.get("/", run.observed.serves or "http")
        if run.workers() - old:
            break
    run.wait_workers(lambda pids: len(pids) == len(old) and bool(pids - old))


ACTIONS: dict[str, Callable[[Run], None]] = {
    "recycle": _recycle,
    "hup": _hup,
    "ttin": lambda run: _scale(run, signal.SIGTTIN, +1),
    "ttou": lambda run: _scale(run, signal.SIGTTOU, -1),
    "int_worker": lambda run: _replace_one(run, signal.SIGINT),
    "abrt_worker": lambda run: _replace_one(run, signal.SIGABRT),
    "usr2": _usr2,
}
