"""Gunicorn compatibility: gunicorn-style ``.py`` config files and ``GUNICORN_CMD_ARGS``.

A config file is executed as Python, like Gunicorn does, and read with gunicorn's
meaning: only gunicorn's setting names are settings (ours, such as ``preload``,
are not read from it), values are coerced as gunicorn coerces them (``"2"``
workers, a ``"0"`` timeout from the environment), and gunicorn's defaults apply
where they differ from ours (no access log unless ``accesslog`` is set,
keep-alive 2 s). Imports, functions and helper variables give no warning; a
gunicorn setting we do not honour is named once, one that does not apply to
async workers is explained in an info line, a near-miss typo gets "did you mean".
Hooks keep Gunicorn's signatures (see :mod:`supervisor.arbiter.hooks`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from supervisor.config import make_config, option_name
from supervisor.config.gunicorn_names import (
    EXPLAINED,
    GUNICORN_SETTINGS,
    GUNICORN_SPELLING,
    HOOKS,
    NOT_CALLED,
    OWN_SETTINGS,
    QUIET,
    UVICORN_WORKERS,
    WORKER_KWARGS,
    access_from_logconfig,
    asgi_worker,
    is_helper,
    merge_logconfig,
    near_miss,
)
from supervisor.config.gunicorn_values import boolean, integer, strings
from supervisor.errors import ConfigError

logger = logging.getLogger("supervisor")

GUNICORN_CMD_ARGS = "GUNICORN_CMD_ARGS"
SUPERVISOR_CMD_ARGS = "SUPERVISOR_CMD_ARGS"
NEVER = 365 * 24 * 3600.0  # gunicorn's "timeout = 0" (no watchdog)


class LoadedConfig(msgspec.Struct):
    """What a config file asks for, in our setting names."""

    path: str
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    hooks: dict[str, Callable[..., Any]] = msgspec.field(default_factory=dict)
    warnings: list[str] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)  # info: settings that do not apply here
    env: dict[str, str] = msgspec.field(default_factory=dict)


# Settings ------------------------------------------------------------------------------


def _bind(value: Any) -> dict[str, Any]:
    binds = [value] if isinstance(value, str) else strings(value)
    # One HOST:PORT becomes --host/--port, so that --port on the command line still wins.
    match = _HOST_PORT.fullmatch(binds[0]) if len(binds) == 1 else None
    if match is None:
        return {"bind": binds}
    return {"host": match.group(1) or match.group(2), "port": int(match.group(3))}


_HOST_PORT = re.compile(r"(?:\[([0-9a-fA-F:.]+)\]|([^:/\[\]]+)):(\d+)")


def _timeout(value: Any) -> dict[str, Any]:
    seconds = integer(value)
    return {"timeout_worker": NEVER if seconds == 0 else seconds}


def _keepalive(value: Any) -> dict[str, Any]:
    seconds = integer(value)
    if seconds == 0:
        raise ValueError("keep-alive cannot be turned off here; use a small value such as 1")
    return {"timeout_keep_alive": seconds}


def _accesslog(value: Any) -> dict[str, Any]:
    """gunicorn's ``accesslog``: unset (None) means no access log; "-" is stdout."""
    if value is None:
        return {"access_log": False}
    return {"access_log": True, "access_log_file": str(value)}


def _loglevel(value: Any) -> dict[str, Any]:
    level = str(value).strip().lower()
    return {"log_level": {"warn": "warning", "fatal": "critical"}.get(level, level)}


def _forwarded(value: Any) -> dict[str, Any]:
    return {"forwarded_allow_ips": ",".join(strings(value))}


def _errorlog(value: Any) -> dict[str, Any]:
    return {"log_file": None if value in ("-", None) else str(value)}


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
        if key in WORKER_KWARGS and item is not None:
            ours = WORKER_KWARGS[key]
            settings[ours] = ",".join(strings(item)) if ours == "forwarded_allow_ips" else item
    return settings


def _checked(check: Callable[[Any], Any], value: Any) -> dict[str, Any]:
    """A setting whose value is only validated: what it asks for is always done here."""
    check(value)
    return {}


def _count(name: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: integer(value)}


def _logconfig_dict(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("expected a dictConfig dict")
    return {"log_config_dict": merge_logconfig(dict(value))}


def _pythonpath(value: Any) -> dict[str, Any]:
    return {"pythonpath": strings(value)} if value else {}


CONVERTERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "wsgi_app": lambda v: {"app": str(v)} if v else {},
    "bind": _bind,
    "workers": _count("workers"),
    "backlog": _count("backlog"),
    "max_requests": _count("max_requests"),
    "max_requests_jitter": _count("max_requests_jitter"),
    "timeout": _timeout,
    "graceful_timeout": _count("timeout_graceful"),
    "keepalive": _keepalive,
    "limit_request_line": _count("limit_request_line"),
    "limit_request_fields": _count("limit_request_fields"),
    "limit_request_field_size": _count("limit_request_field_size"),
    "preload_app": lambda v: {"preload": boolean(v)},
    "reload": lambda v: {"reload": boolean(v)},
    "reload_extra_files": lambda v: {"reload_includes": strings(v)} if v else {},
    "chdir": lambda v: {"chdir": str(v)},
    "pythonpath": _pythonpath,
    "pidfile": lambda v: {"pid": str(v)} if v else {},
    "accesslog": _accesslog,
    "errorlog": _errorlog,
    "loglevel": _loglevel,
    "capture_output": lambda v: {"capture_output": boolean(v)},
    "forwarded_allow_ips": _forwarded,
    "asgi_loop": lambda v: {"loop": v},
    "asgi_lifespan": lambda v: {"lifespan": v},
    "root_path": lambda v: {"root_path": v},
    "access_log_format": lambda v: {"access_log_format": str(v)} if v else {},
    "logconfig_dict": _logconfig_dict,
    "logconfig": lambda v: {"log_config": str(v)} if v else {},
    "logconfig_json": lambda v: {"log_config": str(v)} if v else {},
    "websocket_max_message_size": _count("ws_max_size"),
    "proc_name": lambda v: {"proc_name": str(v)} if v else {},
    "user": lambda v: {"user": str(v)} if v not in (None, "") else {},
    "group": lambda v: {"group": str(v)} if v not in (None, "") else {},
    "umask": _count("umask"),
    # Workers always get the user's groups (the issue asks for them; see system/privileges).
    "initgroups": lambda v: _checked(boolean, v),
    "certfile": lambda v: {"ssl_certfile": str(v)} if v else {},
    "keyfile": lambda v: {"ssl_keyfile": str(v)} if v else {},
    "ca_certs": lambda v: {"ssl_ca_certs": str(v)} if v else {},
    "cert_reqs": _count("ssl_cert_reqs"),
    "ciphers": lambda v: {"ssl_ciphers": str(v)} if v else {},
    "ssl_version": _count("ssl_version"),
}
# Where gunicorn's default is not ours (a file given means gunicorn's meaning).
GUNICORN_DEFAULTS: dict[str, dict[str, Any]] = {
    "accesslog": {"access_log": False},
    "keepalive": {"timeout_keep_alive": 2},
}
# gunicorn's SIGHUP forks every new worker, then stops the old ones (not one by one).
HUP_ALL_AT_ONCE = 1024


def parse_env(value: Any) -> dict[str, str]:
    """gunicorn's raw_env / -e: ["KEY=VALUE", ...]."""
    env: dict[str, str] = {}
    for item in [value] if isinstance(value, str) else strings(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f'{item!r} is not "KEY=VALUE"')
        env[key.strip()] = val
    return env


def _logs_through_logging(namespace: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """With ``accesslog`` unset, access lines still come from a logging config: gunicorn
    enables them with logconfig_dict/_json, and UvicornWorker feeds uvicorn.access."""
    given = any(namespace.get(name) for name in ("logconfig", "logconfig_json"))
    return given or access_from_logconfig(settings) or bool(settings.get("log_config_dict"))


def translate(namespace: Mapping[str, Any], path: str = "<config>") -> LoadedConfig:
    """Turn a config file's module-level names into our settings, hooks and notes."""
    loaded = LoadedConfig(path)
    unsupported: list[str] = []
    typos: list[str] = []
    own: list[str] = []
    names = [name for name in namespace if not name.startswith("_")]
    # worker_class last: a subclass's CONFIG_KWARGS win over the file's settings, as in gunicorn.
    names.sort(key=lambda name: name == "worker_class")
    for name in names:
        value = namespace[name]
        try:
            if name in NOT_CALLED and value is not None:
                unsupported.append(f"{name} (never called: {NOT_CALLED[name]})")
            elif name in HOOKS:
                if value is not None:
                    _add_hook(loaded, name, value)
            elif name in CONVERTERS:
                loaded.settings.update(CONVERTERS[name](value))
            elif name == "worker_class":
                loaded.settings.update(worker_class_settings(value))
            elif name == "raw_env":
                loaded.env.update(parse_env(value) if value else {})
            elif name in QUIET:
                continue
            elif name in EXPLAINED:
                loaded.notes.append(f"{name} has no effect here: {EXPLAINED[name]}")
            elif name in GUNICORN_SETTINGS:
                unsupported.append(name)
            elif name in OWN_SETTINGS and not is_helper(value):
                hint = GUNICORN_SPELLING.get(name)
                own.append(f"{name} (gunicorn's name is {hint})" if hint else name)
            elif not is_helper(value) and (match := near_miss(name, namespace)):
                typos.append(f"{name} (did you mean {match}?)")
        except ValueError as exc:
            raise ConfigError(f"{path}: {name} = {value!r}: {exc}.") from exc
    if "ssl_context" in loaded.hooks and not asgi_worker(namespace.get("worker_class")):
        # gunicorn's UvicornWorker never calls it: uvicorn builds its own context.
        del loaded.hooks["ssl_context"]
        loaded.notes.append("ssl_context is not called: UvicornWorker never calls it either")
    loaded.settings.setdefault("restart_batch", HUP_ALL_AT_ONCE)
    for name, defaults in GUNICORN_DEFAULTS.items():
        if name not in namespace:
            for key, item in defaults.items():
                loaded.settings.setdefault(key, item)
    if "accesslog" not in namespace and _logs_through_logging(namespace, loaded.settings):
        loaded.settings["access_log"] = True
    _validate(loaded.settings, path)
    for names_found, what in (
        (unsupported, "ignoring gunicorn settings not supported here"),
        (own, _OWN_NOTE),
        (typos, "not gunicorn settings, ignored"),
    ):
        if names_found:
            loaded.warnings.append(f"Config file {path}: {what}: {', '.join(names_found)}.")
    return loaded


_OWN_NOTE = (
    "the supervisor's own settings are not read from a gunicorn config file (gunicorn"
    " ignores them too); give them as flags or SUPERVISOR_* variables"
)


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
