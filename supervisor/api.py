"""``supervisor.run(...)``: the drop-in for ``uvicorn.run`` with supervised, forked workers.

Parameter names match ``uvicorn.run`` where the two overlap; the supervisor's
own settings (``max_memory``, ``max_lifetime``, ``preload``...) are keyword
arguments with the names of :class:`supervisor.config.Config`. Uvicorn
parameters we do not support raise :class:`TypeError` naming them, rather
than being silently ignored.

Like ``uvicorn.run`` it reads no ``SUPERVISOR_*`` environment variables: the
call is the configuration. (``WEB_CONCURRENCY`` still gives the worker count
when ``workers`` is not passed, as with uvicorn.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from supervisor.config import FIELD_NAMES, Config, make_config
from supervisor.errors import ConfigError

__all__ = ["build_config", "run"]

# uvicorn.run parameters we refuse, with the reason shown to the caller.
UNSUPPORTED: dict[str, str] = {
    "ssl_context_factory": "give the certificate files (ssl_certfile, ssl_keyfile...)",
    "log_config": "use log_level and log_format; the supervisor owns logging for all workers",
    "use_colors": "log lines are plain text or JSON (log_format)",
    "timeout_notify": "use timeout_worker (liveness from the worker's event loop)",
    "callback_notify": "use timeout_worker (liveness from the worker's event loop)",
}
# uvicorn name -> our name, where they differ.
RENAMED = {
    "limit_max_requests": "max_requests",
    "limit_max_requests_jitter": "max_requests_jitter",
    "limit_concurrency": "max_concurrent",
    "timeout_graceful_shutdown": "timeout_graceful",
    "timeout_worker_healthcheck": "timeout_worker",
}
_DEFAULT_LOG_CONFIG = object()
_NOT_SETTINGS = frozenset({"app", "options", "log_config"})


def run(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    fd: int | None = None,
    workers: int | None = None,
    loop: str = "auto",
    http: str = "auto",
    ws: str = "auto",
    lifespan: str = "auto",
    interface: str = "auto",
    http2: bool = False,
    env_file: str | os.PathLike[str] | None = None,
    log_level: str | int | None = None,
    access_log: bool = True,
    proxy_headers: bool = True,
    server_header: bool = True,
    date_header: bool = True,
    forwarded_allow_ips: Sequence[str] | str | None = None,
    root_path: str = "",
    backlog: int = 2048,
    timeout_keep_alive: float = 5,
    timeout_graceful_shutdown: float | None = None,
    limit_max_requests: int | None = None,
    limit_max_requests_jitter: int = 0,
    limit_concurrency: int | None = None,
    reload: bool = False,
    reload_dirs: Sequence[str] | str | None = None,
    reload_includes: Sequence[str] | str | None = None,
    reload_excludes: Sequence[str] | str | None = None,
    reload_delay: float = 0.25,
    app_dir: str | None = None,
    factory: bool = False,
    log_config: Any = _DEFAULT_LOG_CONFIG,
    **options: Any,
) -> None:
    """Run ``app`` under the supervisor until it is stopped (SIGTERM, SIGINT, SIGQUIT).

    ``app`` is an import string ("app.main:app") or the ASGI app itself (the forked
    workers share it, as with ``--preload``: a SIGHUP does not reload its code).
    Returns when the supervisor stopped cleanly; otherwise raises SystemExit with the
    CLI's exit code (3 worker boot failure, 4 app load failure, 1 other), as uvicorn.run.
    """
    # Every named parameter is a uvicorn setting; ``options`` holds ours (max_memory...).
    settings = {name: value for name, value in locals().items() if name not in _NOT_SETTINGS}
    if env_file is not None:
        settings["env_file"] = os.fspath(env_file)
    if log_config is not _DEFAULT_LOG_CONFIG and log_config is not None:
        options["log_config"] = log_config
    _refuse_interface(interface)
    config, app_object = build_config(app, {**settings, **options})

    from supervisor.arbiter.runner import run_config  # noqa: PLC0415 - imports uvicorn and anyio

    code = run_config(config, app=app_object)
    if code:
        raise SystemExit(code)


def _refuse_interface(interface: str) -> None:
    if interface == "wsgi":
        raise ConfigError('interface="wsgi" is not supported: the app must be ASGI.')


def build_config(app: Any, settings: dict[str, Any]) -> tuple[Config, Any | None]:
    """Validate ``run()``'s arguments: the Config, and the app object to fork with (or None)."""
    unsupported = sorted(name for name in settings if name in UNSUPPORTED)
    if unsupported:
        reasons = "; ".join(f"{name}: {UNSUPPORTED[name]}" for name in unsupported)
        raise TypeError(f"supervisor.run() does not support {', '.join(unsupported)} ({reasons}).")
    settings = dict(settings)
    fd = settings.pop("fd", None)
    values: dict[str, Any] = {"bind": [f"fd://{fd}"]} if fd is not None else {}
    for name, value in settings.items():
        field = RENAMED.get(name, name)
        if field not in FIELD_NAMES or field == "app":
            raise TypeError(f"supervisor.run() got an unexpected keyword argument {name!r}.")
        values[field] = value
    if values.get("headers"):  # uvicorn.run's [(name, value)] -> our "Name: Value"
        values["headers"] = [
            h if isinstance(h, str) else f"{h[0]}: {h[1]}" for h in values["headers"]
        ]
    values = _uvicorn_values(values)
    app_object: Any | None = None
    if isinstance(app, str):
        values["app"] = app
    else:
        app_object = _app_object(app, values)
    return make_config(values), app_object


def _uvicorn_values(values: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's spellings of a value -> ours."""
    if values.get("workers") is None and "WEB_CONCURRENCY" in os.environ:
        values["workers"] = os.environ["WEB_CONCURRENCY"]
    level = values.get("log_level")
    if isinstance(level, int):
        values["log_level"] = "trace" if level < logging.DEBUG else logging.getLevelName(level)
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].lower()
    ips = values.get("forwarded_allow_ips")
    if ips is not None and not isinstance(ips, str):
        values["forwarded_allow_ips"] = ",".join(ips)
    for name in ("reload_dirs", "reload_includes", "reload_excludes", "bind"):
        if isinstance(values.get(name), (str, os.PathLike)):
            values[name] = [os.fspath(values[name])]
    return values


def _app_object(app: Any, values: dict[str, Any]) -> Any:
    if not callable(app):
        raise ConfigError(f"app must be an ASGI callable or an import string, not {app!r}.")
    if values.get("reload"):
        raise ConfigError(
            'reload=True needs the app as an import string (for example "app.main:app"),'
            " so that changed code can be imported again."
        )
    if values.pop("factory", False):
        factory: Callable[[], Any] = app
        app = factory()
    name = getattr(app, "__qualname__", None) or f"<{type(app).__name__} object>"
    values["app"] = f"{getattr(app, '__module__', None) or '?'}:{name}"
    return app
