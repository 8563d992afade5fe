"""Logging with real frameworks, run as their users run them: Django, FastAPI, Starlette.

Each test starts the real supervisor on a framework app (with the app's own
logging set-up: Django's LOGGING, uvicorn's LOGGING_CONFIG applied by a FastAPI
app, ``basicConfig(force=True)`` in a Starlette lifespan), sends real requests,
stops it and reads every line it wrote: in JSON mode each line is one object,
each framework record comes out once, as a record of its own logger, with the
worker's pid, and each request has exactly one access line.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.e2e.test_logging_e2e import ACCESS_TEXT, json_lines

DJANGO = "tests.apps.frameworks.django_project.asgi:application"
DJANGO_SETTINGS = "tests.apps.frameworks.django_project.settings"
FASTAPI = "tests.apps.frameworks.fastapi_app:app"
STARLETTE = "tests.apps.frameworks.starlette_app:app"
BOOT_TIMEOUT = 30.0  # importing a framework on a busy 2-core machine takes a while
Record = dict[str, Any]


@dataclass
class Run:
    log: str
    workers: set[int]
    statuses: dict[str, int]

    def records(self) -> list[Record]:
        return json_lines(self.log)


def serve(
    start_supervisor: StartSupervisor,
    app: str,
    paths: Sequence[str],
    *args: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``app`` under the supervisor, GET each path once, stop it cleanly."""
    sup = start_supervisor(app, "-w", str(workers), *args, env=env)
    pids = sup.wait_serving(workers, timeout=BOOT_TIMEOUT)
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=sup.url, timeout=10) as client:
        for path in paths:
            # A new connection each time, so that with 2 workers both get requests.
            response = client.get(path, headers={"Connection": "close"})
            statuses[path] = response.status_code
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0, sup.log()
    return Run(sup.log(), pids, statuses)


def once(records: list[Record], where: Callable[[Record], bool], what: str) -> Record:
    found = [r for r in records if where(r)]
    assert len(found) == 1, f"{what}: {len(found)} records, not 1:\n" + "\n".join(map(str, found))
    return found[0]


def with_message(message: str) -> Callable[[Record], bool]:
    return lambda r: r["message"] == message


def assert_one_access_record_each(run: Run, records: list[Record]) -> list[Record]:
    access = [r for r in records if r["logger"] == "supervisor.access"]
    assert sorted(r["path"] for r in access) == sorted(run.statuses), "one access line a request"
    for record in access:
        assert record["status"] == run.statuses[record["path"]], record
        assert record["pid"] == record["worker_pid"] and record["pid"] in run.workers, record
    assert not any(r["logger"] == "uvicorn.access" for r in records), "uvicorn's stays quiet"
    return access


# Django -----------------------------------------------------------------------------

DJANGO_PATHS = ("/", "/async", "/log", "/missing", "/forbidden", "/boom")


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS}, id="default-logging"),
        pytest.param(
            {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS, "DJANGO_DEBUG": "1"},
            id="default-logging-debug",
        ),
        pytest.param(
            {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS + "_logging"}, id="project-LOGGING"
        ),
    ],
)
def test_django_records_come_out_once_as_json_with_the_request_object(
    start_supervisor: StartSupervisor, env: dict[str, str]
) -> None:
    run = serve(start_supervisor, DJANGO, DJANGO_PATHS, "--log-format", "json", workers=2, env=env)
    assert run.statuses == {
        "/": 200,
        "/async": 200,
        "/log": 200,
        "/missing": 404,
        "/forbidden": 403,
        "/boom": 500,
    }
    records = run.records()

    missing = once(records, with_message("Not Found: /missing"), "django.request's 404")
    assert missing["logger"] == "django.request" and missing["level"] == "warning"
    assert missing["status_code"] == 404
    assert missing["request"] == "<ASGIRequest: GET '/missing'>", "the request object, as repr"
    forbidden = once(
        records, with_message("Forbidden (Permission denied): /forbidden"), "django.request's 403"
    )
    assert forbidden["status_code"] == 403
    assert forbidden["request"] == "<ASGIRequest: GET '/forbidden'>"
    crash = once(records, with_message("Internal Server Error: /boom"), "django.request's 500")
    assert crash["logger"] == "django.request" and crash["level"] == "error"
    assert crash["status_code"] == 500 and crash["request"] == "<ASGIRequest: GET '/boom'>"
    assert crash["exception"].rstrip().endswith("RuntimeError: django boom")
    view = once(records, with_message("django view says hi"), "the view's own record")
    assert view["logger"] == "tests.apps.frameworks.django_project.views"
    assert view["user_id"] == 42 and view["request"] == "<ASGIRequest: GET '/log'>"
    for record in (missing, forbidden, crash, view):
        assert record["pid"] in run.workers, record

    assert_one_access_record_each(run, records)
    assert sum("RuntimeError: django boom" in line for line in run.log.splitlines()) == 1
    assert "DJANGOTEXT" not in run.log, "the project's text format gave way to JSON"


@pytest.mark.parametrize(
    ("settings", "not_found"),
    [
        pytest.param(DJANGO_SETTINGS, r"\[[^]]+\] \[(\d+)\] \[WARNING\] ", id="default-logging"),
        pytest.param(
            DJANGO_SETTINGS + "_logging",
            r"DJANGOTEXT WARNING \S+ \S+ django\.request (\d+) ",
            id="project-LOGGING",
        ),
    ],
)
def test_django_text_mode_access_lines_and_records_once(
    start_supervisor: StartSupervisor, settings: str, not_found: str
) -> None:
    """Text (the default): our access line once, Django's records once, in the format the
    project chose (its own formatter when its LOGGING has one, ours otherwise)."""
    paths = ("/", "/log", "/missing", "/boom")
    run = serve(
        start_supervisor, DJANGO, paths, workers=2, env={"DJANGO_SETTINGS_MODULE": settings}
    )
    lines = run.log.splitlines()
    access = [m for line in lines if (m := ACCESS_TEXT.match(line))]
    assert sorted(m.group(2) for m in access) == sorted(paths), "\n".join(lines)
    assert {int(m.group(1)) for m in access} <= run.workers
    for name in ("Not Found: /missing", "Internal Server Error: /boom", "django view says hi"):
        assert sum(line.endswith(name) for line in lines) == 1, f"{name!r} once\n{run.log}"
    (line,) = [line for line in lines if line.endswith("Not Found: /missing")]
    match = re.match(not_found, line)
    assert match and int(match.group(1)) in run.workers, line
    assert sum(line == "RuntimeError: django boom" for line in lines) == 1
    assert not any('"GET /' in line and not ACCESS_TEXT.match(line) for line in lines), (
        "no second access line (Django's LOGGING gives uvicorn.access a handler)"
    )


# FastAPI ----------------------------------------------------------------------------

FASTAPI_PATHS = ("/items/1", "/items/500", "/boom", "/stream")


def test_fastapi_json_records_once_with_extras_and_one_access_line_a_request(
    start_supervisor: StartSupervisor,
) -> None:
    run = serve(start_supervisor, FASTAPI, FASTAPI_PATHS, "--log-format", "json")
    assert run.statuses == {"/items/1": 200, "/items/500": 404, "/boom": 500, "/stream": 200}
    records = run.records()
    (worker,) = run.workers

    item = once(records, with_message("item 1 looked up"), "the app's own record")
    assert item["logger"] == "tests.apps.frameworks.fastapi_app" and item["pid"] == worker
    assert item["item"] == 1 and item["customer"] == "<Customer ada>"
    crash = once(records, with_message("Exception in ASGI application\n"), "uvicorn's crash")
    assert crash["logger"] == "uvicorn.error" and crash["pid"] == worker
    assert crash["exception"].rstrip().endswith("RuntimeError: fastapi boom")
    once(records, with_message("Application startup complete."), "uvicorn's startup")

    access = {r["path"]: r for r in assert_one_access_record_each(run, records)}
    assert access["/stream"]["bytes"] == len(b"chunk 0\n") * 5, "a stream's bytes, counted"
    assert access["/items/500"]["status"] == 404
    assert sum("fastapi boom" in line for line in run.log.splitlines()) == 1


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_fastapi_text_mode_keeps_uvicorns_format_and_one_access_line(
    start_supervisor: StartSupervisor, http: str
) -> None:
    """uvicorn's LOGGING_CONFIG, applied by the app, configures "uvicorn.access" with its
    AccessFormatter: still one access line a request, ours (both HTTP implementations)."""
    run = serve(start_supervisor, FASTAPI, FASTAPI_PATHS, "--http", http)
    lines = run.log.splitlines()
    access = [m for line in lines if (m := ACCESS_TEXT.match(line))]
    assert sorted(m.group(2) for m in access) == sorted(FASTAPI_PATHS), run.log
    assert sum('"GET /items/1 ' in line for line in lines) == 1, run.log
    # uvicorn's DefaultFormatter, which the app chose for its logs: "INFO:     message".
    assert sum(re.match(r"INFO: +item 1 looked up$", line) is not None for line in lines) == 1
    assert (
        sum(re.match(r"ERROR: +Exception in ASGI application", line) is not None for line in lines)
        == 1
    )


def test_fastapi_access_logfile_gets_the_access_lines_and_only_them(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    access_file = tmp_path / "access.log"
    run = serve(
        start_supervisor,
        FASTAPI,
        FASTAPI_PATHS,
        "--log-format",
        "json",
        "--access-logfile",
        str(access_file),
    )
    access = json_lines(access_file.read_text())
    assert sorted(r["path"] for r in access) == sorted(FASTAPI_PATHS)
    assert {r["logger"] for r in access} == {"supervisor.access"}
    records = run.records()
    assert not any(r["logger"] == "supervisor.access" for r in records), "not in the main log"
    once(records, with_message("item 1 looked up"), "the app's record, in the main log")


# Starlette --------------------------------------------------------------------------


def test_starlette_json_records_once_after_basicconfig_force_in_lifespan(
    start_supervisor: StartSupervisor,
) -> None:
    run = serve(start_supervisor, STARLETTE, ("/", "/boom", "/print"), "--log-format", "json")
    assert run.statuses == {"/": 200, "/boom": 500, "/print": 200}
    records = run.records()
    (worker,) = run.workers

    index = once(records, with_message("starlette index"), "the app's record")
    assert index["logger"] == "tests.apps.frameworks.starlette_app" and index["pid"] == worker
    assert index["client_host"][0] == "127.0.0.1", "a tuple extra, encoded as a list"
    assert index["request"].startswith("<starlette.requests.Request object at ")
    crash = once(records, with_message("Exception in ASGI application\n"), "uvicorn's crash")
    assert crash["pid"] == worker and "RuntimeError: starlette boom" in crash["exception"]
    printed = once(records, with_message("printed by starlette"), "print()")
    assert printed["logger"] == "stdout" and printed["pid"] == worker
    once(records, with_message("starlette app shutting down"), "the lifespan's shutdown record")
    assert_one_access_record_each(run, records)


def test_starlette_records_logged_during_lifespan_startup_keep_their_logger(
    start_supervisor: StartSupervisor,
) -> None:
    run = serve(start_supervisor, STARLETTE, ("/",), "--log-format", "json")
    records = run.records()
    (worker,) = run.workers
    started = once(records, with_message("starlette app started"), "the lifespan's record")
    assert started["logger"] == "tests.apps.frameworks.starlette_app" and started["pid"] == worker
    complete = once(records, with_message("Application startup complete."), "uvicorn's")
    assert complete["logger"] == "uvicorn.error" and complete["pid"] == worker
    assert not any("STARLETTETEXT" in r["message"] for r in records)
