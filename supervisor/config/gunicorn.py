"""Gunicorn compatibility: gunicorn-style ``.py`` config files and ``GUNICORN_CMD_ARGS``.

A config file is executed as Python, like Gunicorn does, and its module-level
names are read as settings. Gunicorn's names (``bind``, ``timeout``,
``keepalive``, ``preload_app``, ``accesslog``...) are translated to ours; our
own setting names (``max_memory``, ``timeout_worker``...) are accepted as
they are. Gunicorn settings we do not support, and names nobody knows, are
reported in one warning line instead of being silently dropped.

Server hooks keep Gunicorn's signatures (``post_fork(server, worker)``); the
objects they receive are described in :mod:`supervisor.arbiter.hooks`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import traceback
import types
from collections.abc import Callable, Mapping, MutableMapping
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
    "logconfig_dict": lambda v: {"log_config_dict": dict(v)} if v else {},
    "logconfig": lambda v: {"log_config": str(v)} if v else {},
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
    previous = loaded.hooks.get(slot)
    if previous is None:
        loaded.hooks[slot] = hook
        return

    def both(*args: Any) -> None:
        previous(*args)
        hook(*args)

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
    export_env(loaded.env, environ)
    return loaded


def export_env(env: Mapping[str, str], target: MutableMapping[str, str] | None) -> None:
    target = os.environ if target is None else target
    for key, value in env.items():
        target.setdefault(key, value)
