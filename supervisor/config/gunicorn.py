"""Gunicorn compatibility: gunicorn-style ``.py`` config files and ``GUNICORN_CMD_ARGS``.

A config file is executed as Python, like Gunicorn does, and its module-level
names are read as settings. Gunicorn's names (``bind``, ``timeout``,
``keepalive``, ``preload_app``, ``accesslog``...) are translated to ours; our
own setting names (``max_memory``, ``timeout_worker``...) are accepted as
they are. Gunicorn settings we do not support, and names nobody knows, are
reported in one warning line instead of being silently dropped.

Server hooks keep Gunicorn's signatures (``post_fork(server, worker)``): each
is wrapped so that ``server`` is a view of our arbiter with ``.log``, ``.pid``,
``.num_workers`` and ``.cfg``, and ``worker`` has ``.pid`` and ``.log``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import shlex
import traceback
import types
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config import FIELD_NAMES, make_config, option_name
from supervisor.errors import ConfigError

logger = logging.getLogger("supervisor")

GUNICORN_CMD_ARGS = "GUNICORN_CMD_ARGS"
SUPERVISOR_CMD_ARGS = "SUPERVISOR_CMD_ARGS"
NEVER = 365 * 24 * 3600.0  # gunicorn's "timeout = 0" (no watchdog)

UVICORN_WORKERS = {
    "uvicorn_worker.UvicornWorker": {},
    "uvicorn.workers.UvicornWorker": {},
    "uvicorn_worker.UvicornH11Worker": {"http": "h11"},
    "uvicorn.workers.UvicornH11Worker": {"http": "h11"},
    "asgi": {},  # gunicorn's own ASGI worker: the app is ASGI, so Uvicorn runs it too
    "gunicorn.workers.gasgi.ASGIWorker": {},
}
# Keys of a UvicornWorker subclass's CONFIG_KWARGS that are also our settings.
_WORKER_KWARGS = {
    "loop": "loop",
    "http": "http",
    "ws": "ws",
    "lifespan": "lifespan",
    "root_path": "root_path",
    "proxy_headers": "proxy_headers",
    "server_header": "server_header",
    "date_header": "date_header",
    "timeout_keep_alive": "timeout_keep_alive",
    "timeout_graceful_shutdown": "timeout_graceful",
    "limit_concurrency": "max_concurrent",
    "backlog": "backlog",
}

# gunicorn hook -> (our hook slot, gunicorn's parameters)
HOOKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "on_starting": ("on_starting", ("server",)),
    "on_reload": ("on_reload", ("server",)),
    "when_ready": ("when_ready", ("server",)),
    "pre_fork": ("pre_fork", ("server", "worker")),
    "post_fork": ("post_fork", ("server", "worker")),
    # Ours runs in the supervisor when the worker is reaped: gunicorn's child_exit moment.
    "worker_exit": ("worker_exit", ("server", "worker")),
    "child_exit": ("worker_exit", ("server", "worker")),
    "on_exit": ("on_exit", ("server",)),
}
# Accepted and without effect, exactly as under gunicorn -k UvicornWorker (or not needed here).
IGNORED = frozenset(
    {"config", "reuse_port", "worker_tmp_dir", "threads", "worker_connections", "sendfile"}
)
# Gunicorn hooks with no moment of ours (every other unknown *value* is named too).
UNSUPPORTED_HOOKS = frozenset(
    {
        "post_worker_init",
        "worker_int",
        "worker_abort",
        "pre_exec",
        "pre_request",
        "post_request",
        "nworkers_changed",
        "ssl_context",
        "on_dirty_starting",
        "dirty_post_fork",
        "dirty_worker_init",
        "dirty_worker_exit",
    }
)


@dataclass
class LoadedConfig:
    """What a config file asks for, in our setting names."""

    path: str
    settings: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


# Settings ------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    raise ValueError(f"use a string or a list of strings, not {type(value).__name__}")


def _bind(value: Any) -> dict[str, Any]:
    binds = [value] if isinstance(value, str) else _strings(value)
    # One HOST:PORT becomes --host/--port, so that --port on the command line still wins.
    match = _HOST_PORT.fullmatch(binds[0]) if len(binds) == 1 else None
    if match is None:
        return {"bind": binds}
    return {"host": match.group(1) or match.group(2), "port": int(match.group(3))}


_HOST_PORT = re.compile(r"(?:\[([0-9a-fA-F:.]+)\]|([^:/\[\]]+)):(\d+)")


def _timeout(value: Any) -> dict[str, Any]:
    return {"timeout_worker": NEVER if value == 0 else value}


def _keepalive(value: Any) -> dict[str, Any]:
    if value == 0:
        raise ValueError("keep-alive cannot be turned off here; use a small value such as 1")
    return {"timeout_keep_alive": value}


def _accesslog(value: Any) -> dict[str, Any]:
    """gunicorn's ``accesslog``: unset (None) means no access log; "-" is stdout."""
    if value is None:
        return {"access_log": False}
    return {"access_log": True, "access_log_file": str(value)}


def _loglevel(value: Any) -> dict[str, Any]:
    level = str(value).strip().lower()
    return {"log_level": {"warn": "warning", "fatal": "critical"}.get(level, level)}


def _forwarded(value: Any) -> dict[str, Any]:
    return {"forwarded_allow_ips": ",".join(_strings(value))}


def worker_class_settings(value: Any) -> dict[str, Any]:
    """Our settings for gunicorn's ``worker_class``; ValueError if it is not a Uvicorn worker."""
    if isinstance(value, str) and value in UVICORN_WORKERS:
        return dict(UVICORN_WORKERS[value])
    cls = value
    if isinstance(value, str):
        module_name, _, attr = value.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr) if module_name else None
        except (ImportError, AttributeError):
            cls = None
    names = [
        name
        for c in getattr(cls, "__mro__", ())
        # uvicorn_worker._workers.UvicornWorker is exported as uvicorn_worker.UvicornWorker
        for name in (f"{c.__module__}.{c.__name__}", f"{c.__module__.split('.')[0]}.{c.__name__}")
    ]
    base = next((name for name in names if name in UVICORN_WORKERS), None)
    if base is None:
        raise ValueError(
            "this supervisor runs ASGI apps in Uvicorn workers only; remove worker_class or set"
            ' it to "uvicorn_worker.UvicornWorker"'
        )
    settings = dict(UVICORN_WORKERS[base])
    for key, item in (getattr(cls, "CONFIG_KWARGS", None) or {}).items():
        if key in _WORKER_KWARGS and item is not None:
            settings[_WORKER_KWARGS[key]] = item
    return settings


CONVERTERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "wsgi_app": lambda v: {"app": v},
    "bind": _bind,
    "workers": lambda v: {"workers": v},
    "backlog": lambda v: {"backlog": v},
    "max_requests": lambda v: {"max_requests": v},
    "max_requests_jitter": lambda v: {"max_requests_jitter": v},
    "timeout": _timeout,
    "graceful_timeout": lambda v: {"timeout_graceful": v},
    "keepalive": _keepalive,
    "preload_app": lambda v: {"preload": bool(v)},
    "reload": lambda v: {"reload": bool(v)},
    "chdir": lambda v: {"app_dir": str(v)},
    "pidfile": lambda v: {"pid": v},
    "errorlog": lambda v: {"log_file": None if v == "-" else v},
    "loglevel": _loglevel,
    "forwarded_allow_ips": _forwarded,
    "worker_class": worker_class_settings,
    "asgi_loop": lambda v: {"loop": v},
    "asgi_lifespan": lambda v: {"lifespan": v},
    "root_path": lambda v: {"root_path": v},
    "access_log_format": lambda v: {"access_log_format": str(v)},
}


def parse_env(value: Any) -> dict[str, str]:
    """gunicorn's raw_env / -e: ["KEY=VALUE", ...]."""
    env: dict[str, str] = {}
    for item in [value] if isinstance(value, str) else _strings(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f'{item!r} is not "KEY=VALUE"')
        env[key.strip()] = val
    return env


def translate(namespace: Mapping[str, Any], path: str = "<config>") -> LoadedConfig:
    """Turn a config file's module-level names into our settings, hooks and warnings."""
    loaded = LoadedConfig(path)
    unsupported: list[str] = []
    notes: list[str] = []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        try:
            if name in HOOKS:
                _add_hook(loaded, name, value)
            elif name in CONVERTERS:
                loaded.settings.update(CONVERTERS[name](value))
            elif name == "accesslog":
                loaded.settings.update(_accesslog(value))
            elif name == "raw_env":
                loaded.env.update(parse_env(value))
            elif name in IGNORED:
                continue
            elif name in FIELD_NAMES and (name != "app" or isinstance(value, str)):
                loaded.settings[name] = value
            elif name in UNSUPPORTED_HOOKS or not (inspect.isclass(value) or callable(value)):
                unsupported.append(name)
        except ValueError as exc:
            raise ConfigError(f"{path}: {name} = {value!r}: {exc}.") from exc
    _validate(loaded.settings, path)
    parts = notes
    if unsupported:
        parts.insert(0, "ignoring settings it does not support: " + ", ".join(unsupported))
    if parts:
        loaded.warnings.append(f"Config file {path}: " + "; ".join(parts) + ".")
    return loaded


def _validate(settings: Mapping[str, Any], path: str) -> None:
    # One setting at a time, so the message names the file and the setting.
    for name, value in settings.items():
        values = {name: value}
        if name.endswith("_jitter"):  # its companion may come from the command line
            values[name.removesuffix("_jitter")] = 1
        try:
            make_config(values, auto_workers=lambda: 1)
        except ConfigError as exc:
            message = str(exc).removeprefix(option_name(name) + ": ")
            raise ConfigError(f"{path}: {name}: {message}") from exc


# Hooks -------------------------------------------------------------------------------


class ServerView:
    """The ``server`` a gunicorn hook receives: our arbiter, with gunicorn's common names."""

    def __init__(self, arbiter: Any | None) -> None:
        self._arbiter = arbiter
        self.log = logger

    @property
    def pid(self) -> int:
        return int(self._arbiter.pid) if self._arbiter is not None else os.getpid()

    @property
    def num_workers(self) -> int:
        return int(self._get("target"))

    @property
    def cfg(self) -> Any:
        return self._get("config")

    def _get(self, name: str) -> Any:
        if self._arbiter is None:
            raise AttributeError(f"server.{name} is not available yet in on_starting")
        return getattr(self._arbiter, name)

    def __getattr__(self, name: str) -> Any:
        return self._get(name)


class WorkerView:
    """The ``worker`` a gunicorn hook receives: ``.pid`` (``"[booting]"`` in pre_fork), ``.log``."""

    def __init__(self, pid: int | str, record: Any | None = None) -> None:
        self.pid = pid
        self.log = logger
        self._record = record

    def __getattr__(self, name: str) -> Any:
        if self._record is None:
            raise AttributeError(f"worker.{name} is not available in this hook")
        return getattr(self._record, name)


def _add_hook(loaded: LoadedConfig, name: str, hook: Any) -> None:
    slot, params = HOOKS[name]
    if not callable(hook):
        raise ValueError("a server hook must be a function")
    try:
        inspect.signature(hook).bind(*params)
    except TypeError as exc:
        raise ValueError(f"a server hook must take ({', '.join(params)})") from exc
    except ValueError:  # a builtin without a signature: trust it
        pass

    def call(arbiter: Any | None, record: Any | None = None) -> None:
        server = ServerView(arbiter)
        if len(params) == 1:
            hook(server)
        elif slot == "pre_fork":
            hook(server, WorkerView("[booting]"))
        elif slot == "post_fork":
            hook(server, WorkerView(os.getpid()))
        else:
            hook(server, WorkerView(getattr(record, "pid", "?"), record))

    previous = loaded.hooks.get(slot)
    if previous is None:
        loaded.hooks[slot] = call
        return

    def both(arbiter: Any | None, record: Any | None = None) -> None:
        previous(arbiter, record)
        call(arbiter, record)

    loaded.hooks[slot] = both


# Loading -----------------------------------------------------------------------------


def execute(path: str) -> dict[str, Any]:
    """Run a config file (or ``python:module.name``) and return its module-level names."""
    if path.startswith("python:"):
        try:
            return dict(vars(importlib.import_module(path.removeprefix("python:"))))
        except Exception as exc:
            raise ConfigError(f"--config {path}: {_describe(exc, None)}") from exc
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file.")
    namespace: dict[str, Any] = {"__file__": str(file.resolve()), "__name__": "__config__"}
    try:
        source = file.read_text()
        exec(compile(source, str(file), "exec"), namespace)  # gunicorn does the same
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc}).") from exc
    except (Exception, SystemExit) as exc:
        raise ConfigError(f"--config {path}: {_describe(exc, str(file))}") from exc
    namespace.pop("__builtins__", None)
    return namespace


def _describe(exc: BaseException, filename: str | None) -> str:
    if isinstance(exc, SyntaxError):
        return f"line {exc.lineno}: syntax error: {exc.msg}."
    line = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if filename is None or frame.filename == filename:
            line = f"line {frame.lineno}: "
            break
    return f"{line}{type(exc).__name__}: {exc}"


def load(path: str, *, environ: MutableMapping[str, str] | None = None) -> LoadedConfig:
    """Read a gunicorn-style config file; its ``raw_env`` is exported for the workers.

    Variables already set in the environment win over ``raw_env``, as with --env-file.
    """
    loaded = translate(execute(path), path)
    _export(loaded.env, environ)
    return loaded


# GUNICORN_CMD_ARGS -------------------------------------------------------------------

_DROP_QUIETLY = {"--reuse-port": 0, "--no-sendfile": 0, "--threads": 1, "--worker-connections": 1}
_DROP_QUIETLY["--worker-tmp-dir"] = 1
_TRANSLATED = {"-k", "--worker-class", "-t", "--timeout", "--access-logfile", "-e", "--env"}
_TRANSLATED |= {"--chdir", "--asgi-loop", "--asgi-lifespan"}


def _translated(flag: str, value: str, env: dict[str, str], notes: list[str]) -> list[str]:
    if flag in ("-k", "--worker-class"):
        out: list[str] = []
        for key, item in worker_class_settings(value).items():
            if isinstance(item, bool):
                out.append(option_name(key) if item else "--no-" + key.replace("_", "-"))
            else:
                out += [option_name(key), str(item)]
        return out
    if flag in ("-t", "--timeout"):
        return ["--timeout-worker", str(NEVER) if value.strip() in ("0", "0.0") else value]
    if flag == "--access-logfile":
        return ["--access-log", "--access-logfile", value]
    if flag in ("-e", "--env"):
        env.update(parse_env(value))
        return []
    renamed = {"--chdir": "--app-dir", "--asgi-loop": "--loop", "--asgi-lifespan": "--lifespan"}
    return [renamed[flag], value]


def _our_flags() -> dict[str, bool]:
    """Our command-line flags -> whether each takes a value."""
    from supervisor.config.model import BOOL_FIELDS  # noqa: PLC0415
    from supervisor.config.options import OPTIONS  # noqa: PLC0415

    flags = {"-c": True, "--config": True, "-h": False, "--help": False, "--version": False}
    for option in OPTIONS:
        flags.update(dict.fromkeys(option.flags, option.field not in BOOL_FIELDS))
        if option.negative:
            flags[option.negative] = False
    return flags


def translate_args(
    args: Sequence[str], *, source: str = GUNICORN_CMD_ARGS, strict: bool = False
) -> tuple[list[str], dict[str, str], list[str]]:
    """Gunicorn command-line arguments -> (our arguments, raw env, warnings).

    Our own flags pass through; gunicorn flags with another name here are
    translated; any other flag is dropped (with its value) and named, or with
    ``strict`` (the real command line) left for the parser to refuse.
    """
    ours = _our_flags()
    out: list[str] = []
    env: dict[str, str] = {}
    notes: list[str] = []
    dropped: list[str] = []
    pending = list(args)
    while pending:
        token = pending.pop(0)
        flag, sep, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if token[:2] in _TRANSLATED and len(token) > 2 and not token.startswith("--"):
            flag, sep, value = token[:2], "=", token[2:]  # -kuvicorn_worker.UvicornWorker
        quiet = flag in _DROP_QUIETLY and not (strict and flag in ours)
        special = flag in _TRANSLATED or quiet
        if not flag.startswith("-") or (flag in ours and not special) or (strict and not special):
            out.append(token)
            if ours.get(flag) and not sep and pending:
                out.append(pending.pop(0))
            continue
        wants_value = flag in _TRANSLATED or _DROP_QUIETLY.get(flag)
        if not sep and pending and (wants_value or not pending[0].startswith("-")):
            value = pending.pop(0)
        if flag in _TRANSLATED:
            try:
                out += _translated(flag, value, env, notes)
            except ValueError as exc:
                raise ConfigError(f"{source}: {flag} {value}: {exc}.") from exc
        elif not quiet:
            dropped.append(flag)
    if dropped:
        notes.insert(0, "ignoring options this supervisor does not support: " + ", ".join(dropped))
    return out, env, [f"{source}: {note}" for note in notes]


def _export(env: Mapping[str, str], target: MutableMapping[str, str] | None) -> None:
    target = os.environ if target is None else target
    for key, value in env.items():
        target.setdefault(key, value)


def gunicorn_argv(
    argv: Sequence[str], *, export: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """The real command line with gunicorn's spellings (-k, --access-logfile, --chdir, -e)
    translated; unknown flags stay for the parser to refuse. Returns (arguments, warnings)."""
    args, env, warnings = translate_args(argv, source="command line", strict=True)
    _export(env, export)
    return args, warnings


def cmd_args(
    environ: Mapping[str, str], *, export: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Extra arguments from SUPERVISOR_CMD_ARGS, else from GUNICORN_CMD_ARGS (translated).

    Returns (arguments, warnings); ``-e KEY=VALUE`` from GUNICORN_CMD_ARGS is
    exported to ``export`` (os.environ) unless the variable is already set.
    """
    if SUPERVISOR_CMD_ARGS in environ or GUNICORN_CMD_ARGS not in environ:
        return shlex.split(environ.get(SUPERVISOR_CMD_ARGS, "")), []
    args, env, warnings = translate_args(shlex.split(environ[GUNICORN_CMD_ARGS]))
    _export(env, export)
    note = f"Using {GUNICORN_CMD_ARGS} (set {SUPERVISOR_CMD_ARGS} to override it): {' '.join(args)}"
    return args, [note, *warnings]
