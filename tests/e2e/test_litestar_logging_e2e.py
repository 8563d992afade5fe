"""Litestar's default logging config under the supervisor, and the fix the docs give.

Litestar's default ``LoggingConfig`` replaces the root logger's handlers with its
queue handler when the app is built (at import, in the worker): the supervisor
says so once, in a warning naming the fix. With
``LoggingConfig(configure_root_logger=False, loggers={"litestar": {"propagate": True}})``
every record is JSON with its own logger, Litestar's exception log included.
"""

from __future__ import annotations

import time

import psutil
import pytest

from tests.conftest import StartSupervisor
from tests.e2e.test_framework_logging_e2e import (
    BOOT_TIMEOUT,
    assert_one_access_record_each,
    once,
    serve,
    with_message,
)
from tests.e2e.test_logging_e2e import ACCESS_TEXT, json_lines

LITESTAR = "tests.apps.frameworks.litestar_app:app"
WARNING = "The application replaced the root logger's handlers"
PATHS = ("/", "/reqlog", "/boom")


def test_litestar_default_config_in_text_mode_warns_once_with_the_fix(
    start_supervisor: StartSupervisor,
) -> None:
    run = serve(start_supervisor, LITESTAR, PATHS, workers=2)
    assert run.statuses == {"/": 200, "/reqlog": 200, "/boom": 500}
    lines = run.log.splitlines()
    warnings = [line for line in lines if WARNING in line]
    assert len(warnings) == 2, f"once per worker\n{run.log}"
    assert all("(QueueListenerHandler)" in line for line in warnings)
    assert all("LoggingConfig(configure_root_logger=False, loggers=" in line for line in warnings)
    access = [m for line in lines if (m := ACCESS_TEXT.match(line))]
    assert sorted(m.group(2) for m in access) == sorted(PATHS), "access lines are ours, once"
    assert sum(line.endswith("litestar index") for line in lines) == 1
    assert sum(line.endswith("litestar request logger") for line in lines) == 1


def test_litestar_default_config_in_json_mode_warns_once_and_loses_nothing(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(LITESTAR, "--log-format", "json")
    (worker,) = sup.wait_serving(1, timeout=BOOT_TIMEOUT)
    assert sup.get("/").status_code == 200
    process = psutil.Process(worker)
    before = sum(process.cpu_times()[:2])
    time.sleep(2)
    busy = sum(process.cpu_times()[:2]) - before
    records = json_lines(sup.log())  # every line is one JSON object
    warning = once(records, lambda r: WARNING in r["message"], "the supervisor's warning")
    assert warning["logger"] == "supervisor" and warning["pid"] == worker
    assert any("Started server process" in r["message"] for r in records), "uvicorn's lines"
    assert any("litestar index" in r["message"] for r in records), "the app's record"
    assert busy < 0.5, f"an idle worker used {busy:.2f}s of CPU in 2s"


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param("propagate", id="configure_root_logger=False+litestar-propagates"),
        pytest.param("no_root", id="configure_root_logger=False"),
        pytest.param("none", id="logging_config=None"),
    ],
)
def test_litestar_with_the_fix_every_line_is_json(
    start_supervisor: StartSupervisor, variant: str
) -> None:
    run = serve(
        start_supervisor,
        LITESTAR,
        PATHS,
        "--log-format",
        "json",
        env={"LITESTAR_LOGGING": variant, "LITESTAR_DEBUG": "1"},
    )
    records = run.records()  # every line is one JSON object
    (worker,) = run.workers
    assert not any(WARNING in r["message"] for r in records), "the root logger was left alone"
    index = once(records, with_message("litestar index"), "the app's record")
    assert index["logger"] == "tests.apps.frameworks.litestar_app" and index["pid"] == worker
    assert index["order"] == "<Order 7>"
    once(records, with_message("Application startup complete."), "uvicorn's startup line")
    assert_one_access_record_each(run, records)

    crash = [r for r in records if "Uncaught exception" in r["message"]]
    if variant == "propagate":
        # Litestar's own logger (debug=True logs uncaught exceptions) propagates to ours.
        assert run.statuses == {"/": 200, "/reqlog": 200, "/boom": 500}
        once(records, with_message("litestar request logger"), "request.logger's record")
        (record,) = crash
        assert record["logger"] == "litestar" and record["pid"] == worker
        assert record["exception"].rstrip().endswith("RuntimeError: litestar boom")
    elif variant == "no_root":
        # The "litestar" logger keeps Litestar's queue handler: its text reaches the
        # worker's stderr, wrapped a line at a time (a traceback is many records).
        assert run.statuses == {"/": 200, "/reqlog": 200, "/boom": 500}
        (record,) = crash
        assert record["logger"] == "stderr" and record["message"].startswith("ERROR - ")
        tail = [r for r in records if r["logger"] == "stderr"]
        assert len(tail) > 3 and tail[-1]["message"] == "RuntimeError: litestar boom"
    else:
        # No logging config at all: Litestar logs no exception, and request.logger raises.
        assert run.statuses == {"/": 200, "/reqlog": 500, "/boom": 500}
        assert crash == []
