"""An app for the PID 1 tests: it makes orphans and shows the process table.

``/orphan`` runs ``sh -c 'sleep S & echo $!'``: the shell forks ``sleep`` and
exits at once, so ``sleep`` is re-parented to the pid namespace's init (the
supervisor, when it runs as PID 1) and exits a moment later. Whoever is init
must reap it, or it stays a zombie. ``/procs`` lists the namespace's /proc.
Any other path is served by :mod:`tests.apps.hello`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.apps import hello


def read_stat(pid: str) -> dict[str, Any] | None:
    """pid, ppid, one-letter state and command name from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it exited while we looked
        return None
    # The command name is in parentheses and may itself contain spaces or ")".
    comm = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return {"pid": int(pid), "ppid": int(ppid), "state": state, "comm": comm}


def process_table() -> list[dict[str, Any]]:
    rows = (read_stat(name) for name in os.listdir("/proc") if name.isdigit())
    return [row for row in rows if row is not None]


def make_orphan(seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        ["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    orphan = done.stdout.strip()
    # The shell has exited (and been reaped by us), so the orphan's parent is
    # now whoever adopts orphans in this namespace.
    return {"orphan": int(orphan), "stat": read_stat(orphan)}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] not in ("/orphan", "/procs"):
        await hello.app(scope, receive, send)
        return
    if scope["path"] == "/orphan":
        query = parse_qs(scope["query_string"].decode())
        seconds = float(query.get("s", ["0.3"])[0])
        result = await asyncio.to_thread(make_orphan, seconds)
    else:
        result = {"procs": await asyncio.to_thread(process_table)}
    result.update(pid=os.getpid(), ppid=os.getppid())
    body = json.dumps(result).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
