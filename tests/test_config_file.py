"""Gunicorn-style config files and GUNICORN_CMD_ARGS: translation (pure) and the real thing."""

from __future__ import annotations

import importlib.util
import inspect
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor.arbiter.hooks import ServerHandle, WorkerHandle
from supervisor.config import cli, cmdargs, make_config
from supervisor.config import gunicorn as config_file
from supervisor.errors import ConfigError
from tests.conftest import StartSupervisor
from tests.servers import free_port, wait_for

HAVE_GUNICORN = importlib.util.find_spec("gunicorn") is not None


def write(tmp_path: Path, text: str, name: str = "gunicorn.conf.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_common_gunicorn_settings_become_ours(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        import multiprocessing
        wsgi_app = "tests.apps.hello:app"
        bind = "0.0.0.0:9000"
        workers = 3
        worker_class = "uvicorn_worker.UvicornWorker"
        max_requests = 1000
        max_requests_jitter = 50
        timeout = 20
        graceful_timeout = 10
        keepalive = 75
        preload_app = True
        accesslog = "-"
        errorlog = "/tmp/error.log"
        loglevel = "WARNING"
        forwarded_allow_ips = ["10.0.0.1", "10.0.0.2"]
        pidfile = "/tmp/app.pid"
        chdir = "/srv/app"
        worker_tmp_dir = "/dev/shm"
        threads = 4
        """,
    )
    loaded = config_file.load(path, environ={})
    assert loaded.settings == {
        "app": "tests.apps.hello:app",
        "host": "0.0.0.0",
        "port": 9000,
        "workers": 3,
        "max_requests": 1000,
        "max_requests_jitter": 50,
        "timeout_worker": 20,
        "timeout_graceful": 10,
        "timeout_keep_alive": 75,
        "preload": True,
        "access_log": True,
        "access_log_file": "-",
        "log_file": "/tmp/error.log",
        "log_level": "warning",
        "forwarded_allow_ips": "10.0.0.1,10.0.0.2",
        "pid": "/tmp/app.pid",
        "chdir": "/srv/app",
        "restart_batch": config_file.HUP_ALL_AT_ONCE,  # gunicorn's SIGHUP: all at once
    }
    assert loaded.warnings == []  # worker_tmp_dir and threads change nothing, as under gunicorn
    assert [note.split(" has no effect")[0] for note in loaded.notes] == [
        "worker_tmp_dir",
        "threads",
    ]
    make_config(loaded.settings)


def test_config_file_is_read_with_gunicorns_meaning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from __future__ import annotations
        import os
        from os import environ
        statsd_host = "localhost:8125"
        syslog = True
        wrokers = 4
        max_request = 500
        keepalive_str = "5"
        keepalive = int(keepalive_str)
        workers_per_core = 2.0
        _private = 1
        def pre_request(worker, req): pass
        def helper(): pass
        class Thing: pass
        max_memory = "512MiB"
        preload = True
        timeout = "0"
        backlog = "64"
        accesslog = "/var/log/access.log"
        """,
    )
    loaded = config_file.load(path, environ={})
    # Our own names (max_memory, preload) are not gunicorn settings: not read, as gunicorn.
    assert loaded.settings == {
        "access_log": True,
        "access_log_file": "/var/log/access.log",
        "timeout_keep_alive": 5,
        "timeout_worker": config_file.NEVER,  # "0" from the environment: no timeout
        "backlog": 64,
        "restart_batch": config_file.HUP_ALL_AT_ONCE,
    }
    assert loaded.warnings == [
        f"Config file {path}: ignoring gunicorn settings not supported here: statsd_host, syslog.",
        f"Config file {path}: the supervisor's own settings are not read from a gunicorn"
        " config file (gunicorn ignores them too); give them as flags or SUPERVISOR_* variables:"
        " max_memory, preload (gunicorn's name is preload_app).",
        f"Config file {path}: not gunicorn settings, ignored: wrokers (did you mean workers?),"
        " max_request (did you mean max_requests?).",
    ]
    assert [note.split(":")[0] for note in loaded.notes] == ["pre_request has no effect here"]


def test_gunicorn_defaults_apply_when_a_config_file_is_given(tmp_path: Path) -> None:
    loaded = config_file.load(write(tmp_path, "workers = 2\n"), environ={})
    assert loaded.settings == {
        "workers": 2,
        "access_log": False,  # no access log unless accesslog is set
        "timeout_keep_alive": 2,  # gunicorn's keepalive
        "restart_batch": config_file.HUP_ALL_AT_ONCE,  # SIGHUP forks every new worker first
    }


def test_logconfig_dict_with_an_access_handler_turns_the_access_log_on(tmp_path: Path) -> None:
    text = """
    logconfig_dict = {
        "handlers": {"f": {"class": "logging.NullHandler"}},
        "loggers": {"gunicorn.access": {"handlers": ["f"]}},
        "root": {"handlers": ["f"]},
    }
    """
    loaded = config_file.load(write(tmp_path, text), environ={})
    assert loaded.settings["access_log"] is True
    merged = loaded.settings["log_config_dict"]
    assert set(merged["loggers"]) == {"gunicorn.error", "gunicorn.access"}  # gunicorn's merge
    assert merged["handlers"] == {"f": {"class": "logging.NullHandler"}}


def test_accesslog_none_turns_access_log_off(tmp_path: Path) -> None:
    loaded = config_file.load(write(tmp_path, "accesslog = None\n"), environ={})
    assert loaded.settings == {
        "access_log": False,
        "timeout_keep_alive": 2,
        "restart_batch": config_file.HUP_ALL_AT_ONCE,
    }


@pytest.mark.parametrize(
    ("worker_class", "expected"),
    [
        ("uvicorn_worker.UvicornWorker", {}),
        ("uvicorn.workers.UvicornWorker", {}),
        ("uvicorn_worker.UvicornH11Worker", {"http": "h11"}),
    ],
)
def test_uvicorn_worker_classes_are_accepted(worker_class: str, expected: dict[str, Any]) -> None:
    assert config_file.worker_class_settings(worker_class) == expected


@pytest.mark.skipif(not HAVE_GUNICORN, reason="needs uvicorn-worker")
def test_uvicorn_worker_subclass_config_kwargs_are_honoured() -> None:
    from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

    class Custom(UvicornWorker):  # type: ignore[misc]
        CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "off"}

    settings = config_file.worker_class_settings(Custom)
    assert settings == {"loop": "asyncio", "http": "h11", "lifespan": "off"}


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent", "no.such.Worker"])
def test_other_worker_classes_are_refused(tmp_path: Path, worker_class: str) -> None:
    path = write(tmp_path, f"worker_class = {worker_class!r}\n")
    with pytest.raises(ConfigError, match="Uvicorn workers only"):
        config_file.load(path, environ={})


def test_raw_env_is_exported_but_the_real_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, 'raw_env = ["A=1", "B=two=2"]\n')
    environ = {"A": "already"}
    loaded = config_file.load(path, environ=environ)
    assert loaded.env == {"A": "1", "B": "two=2"}
    assert environ == {"A": "already", "B": "two=2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = 0\n", r"gunicorn.conf.py: workers: expected int >= 1"),
        ("keepalive = 0\n", "keep-alive cannot be turned off"),
        ("raw_env = ['NOEQUALS']\n", 'is not "KEY=VALUE"'),
        ("loglevel = 'loud'\n", "log_level"),
        ("bind = 8000\n", "bind = 8000"),
        ("def post_fork(server): pass\n", r"must take \(server, worker\)"),
        ("workers = (\n", "line 1: syntax error"),
        ("import json\nx = 1\nraise RuntimeError('boom')\n", "line 3: RuntimeError: boom"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_file.load(write(tmp_path, text), environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config_file.load("/nonexistent/gunicorn.conf.py", environ={})


def test_python_module_config() -> None:
    loaded = config_file.load("python:tests.apps.gunicorn_conf", environ={})
    assert loaded.settings["workers"] == 2


def test_timeout_zero_means_no_watchdog(tmp_path: Path) -> None:
    loaded = config_file.load(write(tmp_path, "timeout = 0\n"), environ={})
    assert loaded.settings["timeout_worker"] >= 365 * 24 * 3600


def test_bind_lists_and_unix_sockets_stay_binds(tmp_path: Path) -> None:
    path = write(tmp_path, "bind = ['127.0.0.1:1', 'unix:/tmp/app.sock']\n")
    assert config_file.load(path, environ={}).settings == {
        "bind": ["127.0.0.1:1", "unix:/tmp/app.sock"],
        "access_log": False,
        "timeout_keep_alive": 2,
        "restart_batch": config_file.HUP_ALL_AT_ONCE,
    }


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "workers = 3\nmax_requests = 10\nbind = '0.0.0.0:1'\n")
    base = ["tests.apps.hello:app", "--config", path]
    assert cli.parse(base, {}).settings["workers"] == 3
    environ = {"SUPERVISOR_WORKERS": "2"}
    assert cli.parse(base, environ).settings["workers"] == "2"
    settings = cli.parse([*base, "-w", "1"], environ).settings
    assert settings["workers"] == "1"
    assert settings["max_requests"] == 10
    assert cli.parse([*base, "--port", "2"], {}).settings | {"workers": 0} == {
        "app": "tests.apps.hello:app",
        "host": "0.0.0.0",
        "port": "2",
        "workers": 0,
        "max_requests": 10,
        "access_log": False,  # gunicorn's defaults, under the flags and the environment
        "timeout_keep_alive": 2,
        "restart_batch": config_file.HUP_ALL_AT_ONCE,
    }


def test_hooks_get_gunicorn_style_arguments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        calls = []
        def on_starting(server): calls.append(("on_starting", server.pid))
        def when_ready(server): calls.append(("when_ready", server.num_workers))
        def pre_fork(server, worker): calls.append(("pre_fork", worker.pid))
        def post_fork(server, worker):
            server.log.info("Worker spawned (pid: %s)", worker.pid)
            calls.append(("post_fork", worker.pid))
        def worker_exit(server, worker): calls.append(("worker_exit", worker.pid))
        def child_exit(server, worker): calls.append(("child_exit", worker.requests))
        def on_exit(server): calls.append(("on_exit", server.cfg))
        """,
    )
    namespace = config_file.execute(path)
    loaded = config_file.translate(namespace, path)
    assert set(loaded.hooks) == {
        "on_starting",
        "when_ready",
        "pre_fork",
        "post_fork",
        "worker_exit",
        "child_exit",
        "on_exit",
    }

    cfg = make_config({"app": "m:a", "workers": 2})
    server = ServerHandle(cfg)
    server.cfg = "the config"  # type: ignore[assignment]
    booting = WorkerHandle(1, 1, cfg)
    forked = WorkerHandle(1, 1, cfg)
    forked.pid = os.getpid()
    gone = WorkerHandle(1, 1, cfg)
    gone.pid, gone.requests = 7, 5

    loaded.hooks["on_starting"](server)
    loaded.hooks["when_ready"](ServerHandle(cfg))
    loaded.hooks["pre_fork"](server, booting)
    loaded.hooks["post_fork"](server, forked)
    loaded.hooks["worker_exit"](server, gone)
    loaded.hooks["child_exit"](server, gone)
    loaded.hooks["on_exit"](server)
    assert namespace["calls"] == [
        ("on_starting", os.getpid()),
        ("when_ready", 2),
        ("pre_fork", "[booting]"),
        ("post_fork", os.getpid()),
        ("worker_exit", 7),
        ("child_exit", 5),
        ("on_exit", "the config"),
    ]


@pytest.mark.skipif(not HAVE_GUNICORN, reason="needs gunicorn")
def test_every_gunicorn_setting_is_handled_or_reported() -> None:
    from gunicorn.config import KNOWN_SETTINGS

    for setting in KNOWN_SETTINGS:
        name = setting.name
        assert name in config_file.GUNICORN_SETTINGS, name
        if "Hooks" in setting.section and name not in config_file.HOOKS:
            said = config_file.translate({name: lambda *args: None})
            assert any(name in line for line in [*said.warnings, *said.notes]), name
            continue
        probes = {"worker_class": "uvicorn_worker.UvicornWorker", "raw_env": ["A=1"]}
        value = probes.get(name, setting.default)
        if value is None or callable(value):
            value = "x"
        try:
            loaded = config_file.translate({name: value})
        except ConfigError:
            continue  # a value this default-ish probe cannot use: it was looked at
        used = loaded.settings or loaded.env or name in config_file.CONVERTERS
        used = used or name in config_file.QUIET
        said = [*loaded.warnings, *loaded.notes]
        assert used or any(name in line for line in said), name


# GUNICORN_CMD_ARGS ------------------------------------------------------------------


def test_gunicorn_cmd_args_are_translated() -> None:
    environ = {
        "GUNICORN_CMD_ARGS": "--bind=0.0.0.0:80 -w 4 -k uvicorn_worker.UvicornH11Worker"
        " --access-logfile - --error-logfile - --threads 8 -n myapp -D --preload -e A=1"
        " --timeout 0 --chdir /srv --reuse-port --graceful-timeout 5"
    }
    export: dict[str, str] = {}
    args, warnings = cmdargs.cmd_args(environ, export=export)
    assert args == [
        "--bind=0.0.0.0:80",
        "-w",
        "4",
        "--http",
        "h11",
        "--access-log",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "-n",  # gunicorn's process-title name is ours too
        "myapp",
        "--preload",
        "--timeout-worker",
        str(config_file.NEVER),
        "--chdir",
        "/srv",
        "--graceful-timeout",
        "5",
    ]
    assert export == {"A": "1"}
    assert warnings[0].startswith("Using GUNICORN_CMD_ARGS")
    assert "ignoring options this supervisor does not support: -D" in warnings[1]
    namespace = cli.build_parser().parse_args([*args, "tests.apps.hello:app"])
    assert namespace.workers == "4"


def test_supervisor_cmd_args_win_over_gunicorn_cmd_args() -> None:
    environ = {"GUNICORN_CMD_ARGS": "-w 4", "SUPERVISOR_CMD_ARGS": "-w 2"}
    assert cmdargs.cmd_args(environ, export={}) == (["-w", "2"], [])
    assert cmdargs.cmd_args({}, export={}) == ([], [])


def test_gunicorn_cmd_args_refuse_a_wsgi_worker() -> None:
    with pytest.raises(ConfigError, match="GUNICORN_CMD_ARGS: -k gevent"):
        cmdargs.cmd_args({"GUNICORN_CMD_ARGS": "-k gevent"}, export={})


# The real thing -----------------------------------------------------------------------


def test_config_file_runs_the_supervisor_with_hooks_at_their_moments(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    record = tmp_path / "hooks.log"
    path = write(
        tmp_path,
        f"""
        import os
        bind = "127.0.0.1:{free_port()}"  # the fixture's --port wins: CLI > file
        workers = 2
        worker_class = "uvicorn_worker.UvicornWorker"
        graceful_timeout = 5
        threads = 4
        statsd_host = "localhost:8125"

        def _note(*words):
            with open({str(record)!r}, "a") as out:
                out.write(" ".join(str(w) for w in words) + "\\n")

        def on_starting(server): _note("on_starting", server.pid)
        def when_ready(server): _note("when_ready", server.num_workers)
        def pre_fork(server, worker): _note("pre_fork", worker.pid)
        def post_fork(server, worker): _note("post_fork", worker.pid, os.getpid())
        def worker_exit(server, worker): _note("worker_exit", worker.pid)
        def on_exit(server): _note("on_exit")
        """,
    )
    sup = start_supervisor("tests.apps.hello:app", "--config", path)
    workers = sup.wait_serving(2)
    assert int(sup.get("/").text) in workers
    wait_for(lambda: record.exists() and "when_ready" in record.read_text(), 5, "when_ready")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0
    lines = [line.split() for line in record.read_text().splitlines()]
    names = [line[0] for line in lines]
    assert names[0] == "on_starting" and int(lines[0][1]) == sup.pid
    assert names.count("pre_fork") == 2
    assert {int(line[1]) for line in lines if line[0] == "post_fork"} == workers
    assert all(line[1] == line[2] for line in lines if line[0] == "post_fork")
    assert ["when_ready", "2"] in lines
    assert {int(line[1]) for line in lines if line[0] == "worker_exit"} == workers
    assert names[-1] == "on_exit"
    assert "ignoring gunicorn settings not supported here: statsd_host" in sup.log()


def test_gunicorn_spellings_on_the_command_line() -> None:
    export: dict[str, str] = {}
    args, warnings = cmdargs.gunicorn_argv(
        ["-kuvicorn_worker.UvicornWorker", "--access-logfile", "-", "-e", "A=1", "--bogus", "m:a"],
        export=export,
    )
    # unknown flags stay for argparse to refuse
    assert args == ["--access-log", "--access-logfile", "-", "--bogus", "m:a"]
    assert (export, warnings) == ({"A": "1"}, [])


CLI_DIFF_APPLIED = "gunicorn_argv" in inspect.getsource(cli.parse)
needs_cli_diff = pytest.mark.skipif(
    not CLI_DIFF_APPLIED, reason="needs the cli.py diff of issue #8 (GUNICORN_CMD_ARGS)"
)


@needs_cli_diff
def test_cli_parse_honours_gunicorn_cmd_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))  # -e exports into os.environ
    environ = {"GUNICORN_CMD_ARGS": "-w 3 -k uvicorn_worker.UvicornWorker --access-logfile -"}
    invocation = cli.parse(["tests.apps.hello:app", "--chdir", "/srv"], environ)
    assert invocation.settings["workers"] == "3"
    assert invocation.settings["access_log"] is True
    assert invocation.settings["chdir"] == "/srv"
    assert invocation.warnings[0].startswith("Using GUNICORN_CMD_ARGS")
    assert cli.parse(["m:a"], {**environ, "SUPERVISOR_CMD_ARGS": ""}).settings == {"app": "m:a"}


@needs_cli_diff
def test_gunicorn_cmd_args_run_the_supervisor(start_supervisor: StartSupervisor) -> None:
    args = (
        "-w 2 -k uvicorn_worker.UvicornWorker --access-logfile - --statsd-host x:1 -e GREETING=hi"
    )
    sup = start_supervisor("tests.apps.hello:app", env={"GUNICORN_CMD_ARGS": args})
    sup.wait_serving(2)
    assert sup.get("/env", params={"name": "GREETING"}).text == "hi"
    log = sup.log()
    assert "Using GUNICORN_CMD_ARGS" in log
    assert "ignoring options this supervisor does not support: --statsd-host" in log


def test_when_ready_is_called_once(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    record = tmp_path / "ready.log"
    hook = f"def when_ready(server):\n    open({str(record)!r}, 'a').write('ready\\n')\n"
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--config", write(tmp_path, hook))
    before = sup.wait_serving(2)
    os.kill(min(before), signal.SIGKILL)
    wait_for(lambda: len(sup.serving_pids() - before) == 1, 10, "a replacement serving")
    wait_for(lambda: sup.children() == sup.serving_pids(), 5, "the pool settled")
    assert record.read_text().count("ready") == 1
