"""A gunicorn config file's logging settings: ``logconfig_dict`` and ``logconfig``.

Users moving from gunicorn keep their ``gunicorn.conf.py``; its logging config
must rule in the supervisor and every worker, as ``--log-config`` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import wait_for

FORMAT = "FILECONF %(process)d %(name)s %(message)s"


def dict_config(log_file: Path) -> str:
    return repr(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"f": {"format": FORMAT}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(log_file),
                    "formatter": "f",
                }
            },
            "root": {"handlers": ["file"], "level": "INFO"},
        }
    )


def ini_config(tmp_path: Path, log_file: Path) -> Path:
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=file\n[formatters]\nkeys=f\n"
        "[logger_root]\nlevel=INFO\nhandlers=file\n"
        f"[handler_file]\nclass=FileHandler\nformatter=f\nargs=({str(log_file)!r},)\n"
        f"[formatter_f]\nformat={FORMAT}\n"  # read raw: no % escaping
    )
    return ini


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param("logconfig_dict", id="gunicorn-logconfig_dict"),
        pytest.param("logconfig", id="gunicorn-logconfig"),
    ],
)
def test_config_file_logging_config_rules_in_the_supervisor_and_every_worker(
    start_supervisor: StartSupervisor, tmp_path: Path, setting: str
) -> None:
    log_file = tmp_path / "user.log"
    if setting == "logconfig":
        value = repr(str(ini_config(tmp_path, log_file)))
    else:
        value = dict_config(log_file)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"workers = 2\n{setting} = {value}\n")
    sup = start_supervisor("tests.apps.hello:app", "-c", str(config))

    def serving() -> set[int] | None:
        assert "does not support" not in sup.log(), sup.log()
        text = log_file.read_text() if log_file.exists() else ""
        pids = {int(pid) for pid in re.findall(r" supervisor Worker (\d+) serving", text)}
        return pids if len(pids) == 2 else None

    workers = wait_for(serving, 20, message=f"2 workers, logged through the file\n{sup.log()}")
    assert httpx.get(sup.url + "/hello", timeout=5).status_code == 200
    text = wait_for(lambda: "/hello" in log_file.read_text() and log_file.read_text(), 5)
    assert f"FILECONF {sup.pid} supervisor Booting worker" in text
    started = set(
        re.findall(r"^FILECONF (\d+) uvicorn\.error Application startup complete", text, re.M)
    )
    assert {int(pid) for pid in started} == workers, "every worker applied it"
    assert "[INFO]" not in sup.log(), "our own handlers stepped aside"


def test_our_own_setting_name_is_not_read_from_a_gunicorn_file(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    # gunicorn ignores log_config_dict (not its name); so do we, and we say so once.
    log_file = tmp_path / "user.log"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"workers = 1\nlog_config_dict = {dict_config(log_file)}\n")
    sup = start_supervisor("tests.apps.hello:app", "-c", str(config))
    sup.wait_serving(1)
    assert not log_file.exists()
    warned = [line for line in sup.log().splitlines() if "log_config_dict" in line]
    assert len(warned) == 1 and "own settings are not read" in warned[0], sup.log()
