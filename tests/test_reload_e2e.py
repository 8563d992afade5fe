"""--reload end to end: several workers, syntax errors survived, excluded folders ignored."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, wait_for

APP = """
import os

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""


def write_app(directory: Path, version: str) -> None:
    path = directory / "svc.py"
    path.write_text(APP.format(version=version))
    # A fresh mtime even within the filesystem's timestamp granularity.
    now = time.time()
    os.utime(path, (now, now))


def answer(sup: SupervisorProcess) -> httpx.Response | None:
    try:
        with httpx.Client() as client:  # a new connection: any worker may answer
            return client.get(sup.url + "/", timeout=2)
    except httpx.HTTPError:
        return None


def served_version(sup: SupervisorProcess) -> str | None:
    response = answer(sup)
    if response is None or response.status_code != 200:
        return None
    return response.text.split()[0]


def start_reloading(start_supervisor: StartSupervisor, app_dir: Path) -> SupervisorProcess:
    return start_supervisor(
        "svc:app", "-w", "2", "--reload", "--app-dir", str(app_dir), "--reload-dir", str(app_dir)
    )


def wait_watching(sup: SupervisorProcess) -> None:
    wait_for(lambda: "Watching " in sup.log(), 10, message="watcher started")


def test_edit_is_served_by_all_workers_within_two_seconds(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    write_app(tmp_path, "v1")
    sup = start_reloading(start_supervisor, tmp_path)
    old = sup.wait_serving(2)
    wait_watching(sup)
    assert served_version(sup) == "v1"
    saved = time.monotonic()
    write_app(tmp_path, "v2")
    wait_for(lambda: served_version(sup) == "v2", 2, interval=0.01, message="v2 served")
    took = time.monotonic() - saved
    new = wait_for(
        # Old workers keep serving the old code until their replacements serve.
        lambda: (
            not (sup.serving_pids() & old)
            and len(sup.serving_pids()) == 2
            and sup.children() == sup.serving_pids()
        ),
        5,
        message="every worker replaced",
    )
    bodies = [(r.text if (r := answer(sup)) else None) for _ in range(20)]
    assert {b.split()[0] if b else None for b in bodies} == {"v2"}, (bodies, sup.log())
    assert "Detected changes in" in sup.log() and "svc.py" in sup.log()
    assert took < 2, took
    assert new


def test_syntax_error_keeps_old_workers_then_recovers(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    write_app(tmp_path, "v1")
    sup = start_reloading(start_supervisor, tmp_path)
    old = sup.wait_serving(2)
    wait_watching(sup)
    (tmp_path / "svc.py").write_text("def broken(:\n    pass\n")
    wait_for(lambda: "Reload failed" in sup.log(), 5, message="reload failure reported")
    log = sup.log()
    assert log.count("SyntaxError") == 1, log
    assert 'svc.py", line 1' in log
    assert "<frozen importlib" not in log and "importlib/__init__.py" not in log
    assert sup.proc.poll() is None
    assert served_version(sup) == "v1"
    assert sup.children() >= old
    write_app(tmp_path, "v3")
    wait_for(lambda: served_version(sup) == "v3", 5, interval=0.02, message="recovered")
    wait_for(lambda: not (sup.children() & old), 5, message="old workers gone")


def test_app_broken_from_the_start_answers_503_until_fixed(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    (tmp_path / "svc.py").write_text("import not_a_module_anywhere\n")
    sup = start_reloading(start_supervisor, tmp_path)
    wait_watching(sup)

    def error_page() -> httpx.Response | None:
        response = answer(sup)
        return response if response is not None and response.status_code == 503 else None

    page = wait_for(error_page, 10, message="503 error page")
    assert "No module named 'not_a_module_anywhere'" in page.text
    assert page.headers["retry-after"] == "1"
    assert sup.proc.poll() is None
    write_app(tmp_path, "v1")
    wait_for(lambda: served_version(sup) == "v1", 5, interval=0.02, message="fixed app served")


def test_excluded_folders_and_other_files_trigger_nothing(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    write_app(tmp_path, "v1")
    for folder in (".venv", "node_modules", "__pycache__", ".git"):
        (tmp_path / folder).mkdir()
    sup = start_reloading(start_supervisor, tmp_path)
    pids = sup.wait_serving(2)
    wait_watching(sup)
    for folder in (".venv", "node_modules", "__pycache__", ".git"):
        (tmp_path / folder / "mod.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    # A change that does count comes last: once it is seen, the others were filtered.
    (tmp_path / "helper.py").write_text("y = 2\n")
    wait_for(lambda: "Detected changes in" in sup.log(), 5, message="helper.py change seen")
    changes = [line for line in sup.log().splitlines() if "Detected changes in" in line]
    assert len(changes) == 1 and "helper.py" in changes[0], changes
    assert "mod.py" not in changes[0] and "notes.txt" not in changes[0]
    wait_for(lambda: not (sup.children() & pids), 5, message="workers replaced once")
