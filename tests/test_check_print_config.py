"""--check-config and --print-config (issue 17), run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.supervisor_process import REPO

APP = "tests.apps.hello:app"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_print_config_names_each_settings_source(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("workers = 3\nbind = '127.0.0.1:9001'\ntimeout = 7\n")
    result = run(
        "--print-config", "-c", str(config), APP, "-w", "2", env={"SUPERVISOR_MAX_REQUESTS": "9"}
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert rows["workers"].endswith("= 2  # flag")  # the flag wins over the file's 3
    assert rows["max_requests"].endswith("= 9  # environment")
    assert rows["port"].endswith("= 9001  # config file")
    assert rows["timeout_worker"].endswith("= 7.0  # config file")
    assert rows["max_memory"].endswith("= None  # default")
    assert rows["app"].endswith(f"= '{APP}'  # flag")


def test_check_config_loads_the_app_and_exits_0() -> None:
    result = run("--check-config", APP, "-w", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Configuration OK: {APP} loads, 2 worker(s)."


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (
            ["tests.apps.no_such_module:app"],
            4,
            'Could not import module "tests.apps.no_such_module"',
        ),
        ([APP, "--chdir", "/no/such/dir"], 2, "--chdir /no/such/dir: can't chdir"),
        ([APP, "--ssl-certfile", "/no/cert.pem"], 2, "--ssl-certfile /no/cert.pem: no such file"),
        ([APP, "--user", "no-such-user-i17"], 2, "--user no-such-user-i17: no such user"),
        ([APP, "-w", "0"], 2, "--workers"),
    ],
)
def test_check_config_says_what_is_wrong_in_one_line(args: list[str], code: int, said: str) -> None:
    result = run("--check-config", *args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr
    assert result.stdout == ""
