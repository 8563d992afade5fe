"""uvicorn's flags (issue 17): `uvicorn APP ...` becomes `python -m supervisor APP ...`.

Each flag is accepted with uvicorn's meaning, or refused in one line with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config import cmdargs
from tests.conftest import StartSupervisor
from tests.supervisor_process import REPO, run_cli

APP = "tests.apps.hello:app"


def test_uvicorn_flags_are_accepted_with_uvicorns_meaning(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        APP,
        *("--header", "X-Served-By: edge-1", "--header", "X-Team:payments"),
        *("--ws-max-size", "1024", "--ws-max-queue", "8", "--ws-ping-interval", "5"),
        *("--ws-ping-timeout", "5", "--ws-per-message-deflate", "false"),
        *("--interface", "asgi3", "--reset-contextvars", "--no-use-colors"),
        *("--h11-max-incomplete-event-size", "65536", "--timeout-worker-healthcheck", "10"),
    )
    sup.wait_serving(1)
    response = sup.get("/")
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "edge-1"  # uvicorn's default response headers
    assert response.headers["x-team"] == "payments"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--use-colors"], "--use-colors is not supported: log lines are plain text or JSON"),
        (["--http2"], "--http2 needs --http zttp"),
        (["--interface", "wsgi"], "invalid choice: 'wsgi'"),
        (["--header", "no-colon"], '--header "no-colon": use "Name: Value"'),
        (["--ws-per-message-deflate", "maybe"], "use true or false"),
    ],
)
def test_flags_without_a_meaning_here_are_refused_in_one_line(args: list[str], said: str) -> None:
    result = run_cli(APP, "--port", "0", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr


def test_http_zttp_without_the_package_is_one_line() -> None:
    if importlib.util.find_spec("zttp") is not None:
        pytest.skip("zttp is installed here")
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", APP, "--port", "0", "--http", "zttp", "--http2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert "the zttp package is not installed here" in result.stderr
    assert "Traceback" not in result.stderr


def test_http_zttp_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "zttp.py").write_text("raise ImportError('no Zig core for this platform')\n")
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", APP, "--port", "0", "--http", "zttp", "--http2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--http zttp: the zttp package does not import here" in lines[0]
    assert "no Zig core for this platform" in lines[0]


def test_fd_becomes_a_bind_of_that_descriptor() -> None:
    args, _ = cmdargs.gunicorn_argv(["--fd", "3", APP])
    assert args == ["--bind", "fd://3", APP]
