"""supervisor.run(): uvicorn.run's names, clear refusals, and the real thing."""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import supervisor
from supervisor import api
from supervisor.config import FIELD_NAMES, Config
from supervisor.errors import ConfigError
from tests.apps.hello import app as hello_app
from tests.servers import REPO, free_port, wait_for


def test_every_uvicorn_run_parameter_is_supported_or_refused_by_name() -> None:
    # Supported: a named parameter of run(), or a setting of ours with uvicorn's name.
    ours = set(inspect.signature(api.run).parameters) | set(FIELD_NAMES)
    for name in inspect.signature(uvicorn.run).parameters:
        assert name in ours or name in api.RENAMED or name in api.UNSUPPORTED, name


def test_uvicorn_names_map_to_our_settings() -> None:
    config, app_object = api.build_config(
        "tests.apps.hello:app",
        {
            "workers": 3,
            "fd": None,
            "limit_max_requests": 100,
            "limit_max_requests_jitter": 10,
            "limit_concurrency": 50,
            "timeout_graceful_shutdown": 7,
            "timeout_keep_alive": 65,
            "forwarded_allow_ips": ["10.0.0.1", "10.0.0.2"],
            "reload_dirs": "src",
            "log_level": logging.WARNING,
            "max_memory": "512MiB",
        },
    )
    assert app_object is None
    assert config.app == "tests.apps.hello:app"
    assert (config.workers, config.max_requests, config.max_requests_jitter) == (3, 100, 10)
    assert config.max_concurrent == 50
    assert (config.timeout_graceful, config.timeout_keep_alive) == (7, 65)
    assert config.forwarded_allow_ips == "10.0.0.1,10.0.0.2"
    assert config.reload_dirs == ["src"]
    assert config.log_level == "warning"
    assert config.max_memory == 512 * 1024**2


def test_defaults_match_uvicorn_where_it_is_safe() -> None:
    config, _ = api.build_config("m:app", {"timeout_graceful_shutdown": None, "workers": None})
    assert config.workers == 1
    assert config.timeout_graceful == 30  # uvicorn's None waits forever; we do not


def test_fd_becomes_a_bind_and_trace_level(monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = api.build_config("m:app", {"fd": 3, "log_level": 5})
    assert config.bind == ["fd://3"]
    assert config.log_level == "trace"


def test_web_concurrency_gives_the_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert api.build_config("m:app", {"workers": None})[0].workers == 4
    assert api.build_config("m:app", {"workers": 2})[0].workers == 2


def test_an_app_object_is_forked_with_any_worker_count() -> None:
    config, app_object = api.build_config(hello_app, {"workers": 4})
    assert app_object is hello_app
    assert config.workers == 4
    assert config.app == "tests.apps.hello:app"


def test_a_factory_object_is_called_once() -> None:
    calls: list[int] = []

    def factory() -> Any:
        calls.append(1)
        return hello_app

    config, app_object = api.build_config(factory, {"factory": True})
    assert app_object is hello_app
    assert calls == [1]
    assert not config.factory


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ssl_context_factory": object()}, TypeError, "does not support ssl_context_factory"),
        ({"use_colors": True}, TypeError, "does not support use_colors"),
        ({"log_config": {"version": 1}}, TypeError, "does not support log_config"),
        ({"wrokers": 2}, TypeError, "unexpected keyword argument 'wrokers'"),
        ({"app": "x:y"}, TypeError, "argument 'app'"),
        ({"interface": "wsgi"}, ConfigError, "must be ASGI"),
        ({"http2": True}, ConfigError, "--http2 needs --http zttp"),
        ({"reload": True}, ConfigError, "reload=True needs the app as an import string"),
        ({"workers": 0}, ConfigError, "--workers"),
    ],
)
def test_clear_refusals(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        api.run(hello_app, **kwargs)


def test_run_hands_config_and_object_to_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Config, Any]] = []

    def fake_run_config(config: Config, *, app: Any = None) -> int:
        calls.append((config, app))
        return 0 if len(calls) == 1 else 3

    monkeypatch.setattr("supervisor.arbiter.runner.run_config", fake_run_config)
    api.run(hello_app, workers=2, log_config=None, port=9001)  # returns: exit code 0
    config, app_object = calls[0]
    assert (config.workers, config.port, app_object) == (2, 9001, hello_app)
    with pytest.raises(SystemExit) as exit_info:
        api.run("tests.apps.hello:app")
    assert exit_info.value.code == 3
    assert calls[1][1] is None


def test_a_non_callable_app_is_refused() -> None:
    with pytest.raises(ConfigError, match="ASGI callable or an import string"):
        api.build_config(42, {})


# The real thing -----------------------------------------------------------------------


@pytest.fixture
def run_api(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> tuple[subprocess.Popen[bytes], str, Path]:
        port = free_port()
        log = tmp_path / f"api-{mode}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.apps.run_api", str(port), mode],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}", log

    yield start
    for proc in started:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.mark.parametrize("mode", ["object", "string", "factory"])
def test_run_serves_with_two_workers_and_stops_cleanly(run_api: Any, mode: str) -> None:
    proc, url, log = run_api(mode)
    seen: set[int] = set()

    def two_workers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited early:\n{log.read_text()}")
        try:
            with httpx.Client() as client:
                seen.add(int(client.get(url + "/", timeout=2).headers["x-worker-pid"]))
        except httpx.HTTPError:
            pass
        return len(seen) == 2

    wait_for(two_workers, 15, f"two workers answering\n{log.read_text()}")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0, log.read_text()
    assert "max-requests 1000+0" in log.read_text()


def test_run_exits_with_the_cli_exit_code_on_failure(tmp_path: Path) -> None:
    code = (
        "from supervisor.api import run\nrun('tests.apps.no_such_module:app', port=0, workers=1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=30)
    assert proc.returncode == 4, proc.stderr.decode()


@pytest.mark.skipif(
    not hasattr(supervisor, "run"), reason="needs the supervisor/__init__.py diff of issue #8"
)
def test_run_is_exported_as_supervisor_run() -> None:
    assert supervisor.run is api.run
