"""gunicorn's names: its settings, its hooks, its Uvicorn workers, and what each means here.

Tables, and how gunicorn merges a ``logconfig_dict``; :mod:`supervisor.config.gunicorn`
reads a config file with them.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Mapping
from typing import Any

from supervisor.config.model import FIELD_NAMES

UVICORN_WORKERS = {
    "uvicorn_worker.UvicornWorker": {},
    "uvicorn.workers.UvicornWorker": {},
    "uvicorn_worker.UvicornH11Worker": {"http": "h11"},
    "uvicorn.workers.UvicornH11Worker": {"http": "h11"},
    "asgi": {},  # gunicorn's own ASGI worker: the app is ASGI, so Uvicorn runs it too
    "gunicorn.workers.gasgi.ASGIWorker": {},
}
# uvicorn.Config keyword -> our setting, for a UvicornWorker subclass's CONFIG_KWARGS
# (gunicorn's UvicornWorker passes them after its own, so they win over the file's settings).
WORKER_KWARGS = {
    "loop": "loop",
    "http": "http",
    "ws": "ws",
    "lifespan": "lifespan",
    "root_path": "root_path",
    "proxy_headers": "proxy_headers",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "server_header": "server_header",
    "date_header": "date_header",
    "access_log": "access_log",
    "log_level": "log_level",
    "env_file": "env_file",
    "factory": "factory",
    "timeout_keep_alive": "timeout_keep_alive",
    "timeout_graceful_shutdown": "timeout_graceful",
    "limit_concurrency": "max_concurrent",
    "limit_max_requests": "max_requests",
    "backlog": "backlog",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile_password": "ssl_keyfile_password",
    "ssl_version": "ssl_version",
    "ssl_cert_reqs": "ssl_cert_reqs",
    "ssl_ca_certs": "ssl_ca_certs",
    "ssl_ciphers": "ssl_ciphers",
}

# Every setting of gunicorn 27 (gunicorn.config.KNOWN_SETTINGS), without importing gunicorn.
_SETTINGS_TEXT = """
    config wsgi_app bind backlog workers worker_class threads worker_connections
    max_requests max_requests_jitter timeout graceful_timeout keepalive limit_request_line
    limit_request_fields limit_request_field_size reload reload_engine reload_extra_files
    spew check_config print_config preload_app sendfile reuse_port chdir daemon raw_env
    pidfile worker_tmp_dir user group umask initgroups tmp_upload_dir secure_scheme_headers
    forwarded_allow_ips accesslog disable_redirect_access_to_syslog access_log_format
    errorlog loglevel capture_output logger_class logconfig logconfig_dict logconfig_json
    syslog_addr syslog syslog_prefix syslog_facility enable_stdio_inheritance statsd_host
    dogstatsd_tags statsd_prefix enable_backlog_metric proc_name default_proc_name
    pythonpath paste on_starting on_reload when_ready pre_fork post_fork post_worker_init
    worker_int worker_abort pre_exec pre_request post_request child_exit worker_exit
    nworkers_changed on_exit ssl_context proxy_protocol proxy_allow_ips protocol
    uwsgi_allow_ips keyfile certfile ssl_version cert_reqs ca_certs suppress_ragged_eofs
    do_handshake_on_connect ciphers http_protocols http2_cleartext
    http2_max_concurrent_streams http2_initial_window_size http2_max_frame_size
    http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding
    strip_header_spaces permit_unconventional_http_method permit_unconventional_http_version
    casefold_http_method forwarder_headers header_map asgi_loop asgi_lifespan
    asgi_disconnect_grace_period websocket_max_message_size http_parser root_path dirty_apps
    dirty_workers dirty_timeout dirty_threads dirty_graceful_timeout on_dirty_starting
    dirty_post_fork dirty_worker_init dirty_worker_exit control_socket control_socket_mode
    control_socket_disable
"""
GUNICORN_SETTINGS = frozenset(_SETTINGS_TEXT.split())


# gunicorn hook -> (our hook slot, gunicorn's parameters)
HOOKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "on_starting": ("on_starting", ("server",)),
    "on_reload": ("on_reload", ("server",)),
    "when_ready": ("when_ready", ("server",)),
    "pre_fork": ("pre_fork", ("server", "worker")),
    "post_fork": ("post_fork", ("server", "worker")),
    "post_worker_init": ("post_worker_init", ("worker",)),
    "worker_int": ("worker_int", ("worker",)),
    "worker_abort": ("worker_abort", ("worker",)),
    "pre_exec": ("pre_exec", ("server",)),
    "worker_exit": ("worker_exit", ("server", "worker")),
    "child_exit": ("child_exit", ("server", "worker")),
    "nworkers_changed": ("nworkers_changed", ("server", "new", "old")),
    "on_exit": ("on_exit", ("server",)),
    "ssl_context": ("ssl_context", ("config", "default_ssl_context_factory")),
}
# Hooks with no moment here yet: named in the warning (never silently dropped).
NOT_CALLED: dict[str, str] = {}  # every hook has one now (worker_abort, pre_exec: issue 17)
# gunicorn settings that do not apply to async workers: one info line each, no warning.
EXPLAINED: dict[str, str] = {
    "threads": "no threads in async workers: each worker serves many requests on its event loop",
    "worker_connections": "uvicorn has no connection cap per worker; see --max-concurrent",
    "worker_tmp_dir": "no heartbeat files here: the supervisor watches each worker's event loop"
    " over a pipe",
    "tmp_upload_dir": "ASGI apps read request bodies themselves; nothing is spooled to disk",
    "daemon": "the supervisor stays in the foreground; run it under systemd or a container"
    " (or daemonize it yourself)",
    "sendfile": "uvicorn does not use sendfile",
    "reuse_port": "the shared socket always has SO_REUSEPORT; our --reuse-port means one"
    " socket per worker",
    "reload_engine": "--reload always uses watchfiles",
    "secure_scheme_headers": "uvicorn reads X-Forwarded-Proto from --forwarded-allow-ips",
    "enable_stdio_inheritance": "only matters with daemon",
    "proxy_protocol": "uvicorn has no PROXY protocol support",
    "suppress_ragged_eofs": "Python's ssl defaults apply",
    "do_handshake_on_connect": "uvicorn's TLS handshakes on connect",
    "permit_obsolete_folding": "gunicorn's parser only; see --http",
    "strip_header_spaces": "gunicorn's parser only; see --http",
    "permit_unconventional_http_method": "gunicorn's parser only; see --http",
    "permit_unconventional_http_version": "gunicorn's parser only; see --http",
    "casefold_http_method": "gunicorn's parser only; see --http",
    "forwarder_headers": "WSGI environ only",
    "header_map": "WSGI environ only",
    "http_parser": "gunicorn's asgi worker's parser; see --http",
    "default_proc_name": "set by gunicorn from the APP argument; see proc_name",
    "control_socket": "our control socket is another protocol; see --control-socket",
    "control_socket_mode": "our control socket is another protocol; see --control-socket",
    "control_socket_disable": "our control socket is another protocol; see --control-socket",
    "pre_request": "ASGI workers never call it (gunicorn's neither); use ASGI middleware",
    "post_request": "ASGI workers never call it (gunicorn's neither); use ASGI middleware",
    "proxy_allow_ips": "only used with proxy_protocol",
    "check_config": "use --check-config",
    "print_config": "use --print-config",
}
# Settings whose value is accepted without a word (defaults, or effect-free here).
QUIET = frozenset({"config", "proxy_allow_ips", "default_proc_name"})


# Our settings that gunicorn does not have (read from a file, they would change what the
# same file does under gunicorn), and gunicorn's spelling where there is one.
# Generic words (host, port, app...) are left out: config files use them as helpers.
OWN_SETTINGS = FIELD_NAMES - GUNICORN_SETTINGS - {"app", "host", "port", "uds", "pid", "http"}
OWN_SETTINGS -= {"ws", "loop", "lifespan", "factory", "env_file"}
GUNICORN_SPELLING = {
    "preload": "preload_app",
    "timeout_worker": "timeout",
    "timeout_graceful": "graceful_timeout",
    "timeout_keep_alive": "keepalive",
    "pid": "pidfile",
    "log_file": "errorlog",
    "log_level": "loglevel",
    "access_log_file": "accesslog",
    "log_config": "logconfig",
}


# gunicorn.glogging.CONFIG_DEFAULTS (gunicorn 27), which a logconfig_dict updates.
_LOG_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stdout",
        },
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        },
    },
    "formatters": {
        "generic": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
        }
    },
}


def merge_logconfig(config: dict[str, Any]) -> dict[str, Any]:
    """gunicorn's merge: its defaults updated (one level) by ``logconfig_dict``.

    Where gunicorn would fail ("Unable to configure root logger") because the dict
    replaced ``handlers`` while a default logger still names ``console``, the default
    loggers keep only the handlers that exist: the user's dict still rules.
    """
    merged = {**_LOG_DEFAULTS, **config}
    handlers = set(merged.get("handlers", {}))
    if "loggers" not in config:
        merged["loggers"] = {
            name: {**entry, "handlers": [h for h in entry["handlers"] if h in handlers]}
            for name, entry in _LOG_DEFAULTS["loggers"].items()
        }
    if "root" not in config:
        root = _LOG_DEFAULTS["root"]
        merged["root"] = {**root, "handlers": [h for h in root["handlers"] if h in handlers]}
    return merged


def access_from_logconfig(settings: Mapping[str, Any]) -> bool:
    """Under UvicornWorker gunicorn.access's handlers feed uvicorn.access: a logconfig_dict
    that gives gunicorn.access a handler logs requests even with ``accesslog`` unset."""
    loggers = (settings.get("log_config_dict") or {}).get("loggers", {})
    return bool((loggers.get("gunicorn.access") or {}).get("handlers"))


def asgi_worker(value: Any) -> bool:
    """gunicorn's own asgi worker (its class or a subclass), which calls ssl_context."""
    if isinstance(value, str):
        return value in ("asgi", "gunicorn.workers.gasgi.ASGIWorker")
    return any(c.__name__ == "ASGIWorker" for c in getattr(value, "__mro__", ()))


def is_helper(value: Any) -> bool:
    return isinstance(value, types.ModuleType) or inspect.isclass(value) or callable(value)


def near_miss(name: str, namespace: Mapping[str, Any]) -> str | None:
    """The gunicorn setting a lowercase name is a typo of, if the file does not set it too
    (``keepalive_str`` beside ``keepalive`` is a helper, ``worker`` alone a typo)."""
    if not name.islower() or name in GUNICORN_SETTINGS:
        return None
    import difflib  # noqa: PLC0415 - only for a misspelt setting, never at a normal start

    match = difflib.get_close_matches(name, GUNICORN_SETTINGS, 1, 0.85)
    if not match or match[0] in namespace or match[0] in HOOKS:
        return None
    return match[0]
