"""What a server hook saw, as one JSON line in the file named by $HOOK_LOG.

The corpus configs call ``record`` from their hooks, under gunicorn and under
the supervisor alike, so a test can compare which hook ran in which process
(master or worker), in what order, and which attributes its ``server`` and
``worker`` objects had. Nothing here may raise: under gunicorn an exception in
``pre_fork`` or ``post_fork`` stops the server, which would hide the very
difference the test is looking for.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The attributes issue 17 promises (gunicorn has them too); the test compares these.
SERVER_CONTRACT = ("cfg", "log", "pid", "num_workers", "WORKERS")
WORKER_CONTRACT = ("pid", "age", "alive", "log", "cfg")
# Recorded for the report only: gunicorn internals that configs in the wild touch.
SERVER_EXTRA = ("LISTENERS", "proc_name", "address", "app", "timeout", "worker_class")
WORKER_EXTRA = ("ppid", "booted", "aborted", "nr", "max_requests", "sockets", "timeout", "tmp")
APP_MODULE = "tests.apps.hello"
MISSING = "<missing>"

_identified_worker: int | None = None  # this process's pid once a hook showed it is a worker


def record(
    hook: str,
    server: Any = None,
    worker: Any = None,
    *,
    attrs: Iterable[str] = (),
    env: Iterable[str] = (),
    **values: Any,
) -> None:
    """Append what ``hook`` sees now: ``attrs`` are dotted names ("worker._worker_id")."""
    path = os.environ.get("HOOK_LOG")
    if not path:
        return
    try:
        entry = _entry(hook, server, worker, attrs=attrs, env=env, values=values)
    except Exception as exc:  # the recorder must not change what the hook does
        entry = {"hook": hook, "pid": os.getpid(), "recorder_error": repr(exc)}
    line = json.dumps(entry, default=repr, sort_keys=True) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError:
        return
    try:
        os.write(
            fd, line.encode()
        )  # one write with O_APPEND: lines from many processes interleave whole
    finally:
        os.close(fd)


def _entry(
    hook: str,
    server: Any,
    worker: Any,
    *,
    attrs: Iterable[str],
    env: Iterable[str],
    values: dict[str, Any],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "hook": hook,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "role": _role(server, worker),
        "t": time.time(),
        "proc": _process(),
        "values": {name: _plain(value) for name, value in values.items()},
        "attrs": {name: _dotted(name, server, worker) for name in attrs},
        "env": {name: os.environ.get(name, MISSING) for name in env},
    }
    if server is not None:
        entry["server"] = _present(server, SERVER_CONTRACT + SERVER_EXTRA)
        entry["num_workers"] = _plain(_get(server, "num_workers"))
        workers = _get(server, "WORKERS")
        entry["n_WORKERS"] = len(workers) if isinstance(workers, dict) else MISSING
    if worker is not None:
        entry["worker"] = _present(worker, WORKER_CONTRACT + WORKER_EXTRA)
        entry["worker_pid"] = _pid_kind(_get(worker, "pid"))
        entry["worker_alive"] = _plain(_get(worker, "alive"))
    return entry


def _role(server: Any, worker: Any) -> str:
    """master, worker, master-child (a fork of the master that is no worker: pre_exec)."""
    global _identified_worker
    me = os.getpid()
    if worker is not None and _get(worker, "pid") == me:
        _identified_worker = me
        return "worker"
    if _identified_worker == me:
        return "worker"
    master = _get(server, "pid") if server is not None else MISSING
    if master == me:
        return "master"
    if isinstance(master, int) and os.getppid() == master:
        return "master-child"
    # gunicorn calls nworkers_changed while it builds the arbiter, before server.pid exists.
    return "master" if server is not None and master == MISSING else "unknown"


def _process() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "uid": os.geteuid(),
        "gid": os.getegid(),
        "groups": sorted(os.getgroups()),
        "app_loaded": APP_MODULE in sys.modules,
    }
    try:
        facts["cwd"] = str(Path.cwd())
    except OSError as exc:
        facts["cwd"] = repr(exc)
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    facts["umask"] = line.split()[1]
    except OSError:
        pass
    return facts


def _get(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except Exception:  # a property that raises counts as missing, as for the hook's author
        return MISSING


def _present(obj: Any, names: Iterable[str]) -> list[str]:
    return sorted(name for name in names if _get(obj, name) is not MISSING)


def _dotted(name: str, server: Any, worker: Any) -> Any:
    head, _, rest = name.partition(".")
    value = {"server": server, "worker": worker}.get(head, MISSING)
    for part in rest.split(".") if rest else ():
        if value is MISSING or value is None:
            return MISSING
        value = _get(value, part)
    return _plain(value)


def _pid_kind(pid: Any) -> str:
    if pid == os.getpid():
        return "self"
    if isinstance(pid, int):
        return "other"
    return str(pid)


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item) for item in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
