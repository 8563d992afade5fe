"""The command-line options table: one line per setting, with its flags and --help text.

Adding a setting touches the Config model and this table only: whether a
field is a boolean (a flag, and --no-... when it has a negative) or a list
(repeatable) comes from Config's annotations. Every option also has an
environment variable: ``SUPERVISOR_`` + the field in upper case.

This module imports little on purpose: the CLI builds its parser before the
heavy imports (see :mod:`supervisor.system.early_signals`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, NoReturn

from supervisor._version import __version__
from supervisor.config.model import BOOL_FIELDS, ENV_PREFIX, LIST_FIELDS
from supervisor.config.options_parity import PARITY_OPTIONS, Option
from supervisor.errors import EXIT_USAGE, ConfigError

CMD_ARGS_ENV = "SUPERVISOR_CMD_ARGS"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


OPTIONS: tuple[Option, ...] = (
    Option(("-w", "--workers"), "workers", "Worker processes, or 'auto' (CPU quota). [1]", "N"),
    Option(
        ("--allow-many-workers",),
        "allow_many_workers",
        "Allow more workers than this host's CPUs and memory can run (see --workers).",
    ),
    Option(("--host",), "host", "Address to bind to. [127.0.0.1]", "HOST"),
    Option(("--port",), "port", "Port to bind to; 0 picks a free one. [8000]", "PORT"),
    Option(
        ("-b", "--bind"),
        "bind",
        "Listen on HOST:PORT, [::1]:PORT, unix:PATH or fd://N; repeatable."
        " Overrides --host/--port.",
        "ADDRESS",
    ),
    Option(("--uds",), "uds", "Listen on this Unix domain socket.", "PATH"),
    Option(
        ("--reuse-port",),
        "reuse_port",
        "One SO_REUSEPORT socket per worker (kernel load balancing) instead of one shared socket.",
    ),
    Option(("--backlog",), "backlog", "Listen backlog. [2048]", "N"),
    Option(("--factory",), "factory", "APP is a factory: call it to get the ASGI app."),
    Option(("--app-dir",), "app_dir", "Look for APP in this directory. [.]", "DIR"),
    Option(
        ("--max-requests", "--limit-max-requests"),
        "max_requests",
        "Recycle a worker after N requests; 0 = never.",
        "N",
    ),
    Option(
        ("--max-requests-jitter", "--limit-max-requests-jitter"),
        "max_requests_jitter",
        "Add random(0..J) to each worker's --max-requests.",
        "J",
    ),
    Option(
        ("--max-memory",),
        "max_memory",
        "Recycle a worker whose RSS passes SIZE (512MiB, 1G, 300MB) or 'auto'.",
        "SIZE",
    ),
    Option(
        ("--max-memory-total",),
        "max_memory_total",
        "Recycle the largest worker when all workers' RSS passes SIZE.",
        "SIZE",
    ),
    Option(
        ("--max-memory-hard",),
        "max_memory_hard",
        "Hard ceiling on each worker's data segment (RLIMIT_DATA): an allocation past SIZE"
        " fails with MemoryError and the worker is replaced. --max-memory is sampled.",
        "SIZE",
    ),
    Option(("--max-lifetime",), "max_lifetime", "Recycle a worker after this age.", "SECONDS"),
    Option(
        ("--max-lifetime-jitter",),
        "max_lifetime_jitter",
        "Random extra lifetime per worker. [a tenth of --max-lifetime]",
        "SECONDS",
    ),
    Option(
        ("--timeout-worker", "--timeout", "-t", "--timeout-worker-healthcheck"),
        "timeout_worker",
        "Kill and replace a worker whose event loop is silent this long. [30]",
        "SECONDS",
    ),
    Option(
        ("--timeout-boot",),
        "timeout_boot",
        "Kill a worker that is not serving this long after it started. [60]",
        "SECONDS",
    ),
    Option(
        ("--timeout-graceful", "--graceful-timeout", "--timeout-graceful-shutdown"),
        "timeout_graceful",
        "On stop or recycle, wait this long for in-flight requests. [30]",
        "SECONDS",
    ),
    Option(
        ("--timeout-keep-alive", "--keep-alive", "--keepalive"),
        "timeout_keep_alive",
        "Close idle keep-alive connections after this; keep it above your load balancer's"
        " idle timeout. [5]",
        "SECONDS",
    ),
    Option(
        ("--restart-batch",),
        "restart_batch",
        "Workers replaced at a time in a rolling restart. [1]",
        "N",
    ),
    Option(("--preload",), "preload", "Import the app once in the supervisor, before forking."),
    Option(
        ("--ready-path",),
        "ready_path",
        "A new worker serves only once the app answers GET PATH with 2xx (asked in-process,"
        " retried until --timeout-boot).",
        "PATH",
    ),
    Option(
        ("--canary-seconds",),
        "canary_seconds",
        "Rolling restarts are canaries: the first new batch serves beside the old generation"
        " this long and the roll aborts if it does worse; 0 = off. [0]",
        "SECONDS",
    ),
    Option(
        ("--canary-max-error-rate",),
        "canary_max_error_rate",
        "Abort a canary whose 5xx share exceeds the old generation's by more than this. [0.05]",
        "SHARE",
    ),
    Option(
        ("--canary-max-p99-ratio",),
        "canary_max_p99_ratio",
        "Abort a canary whose p99 latency exceeds the old generation's times this; 0 = off. [0]",
        "RATIO",
    ),
    Option(
        ("--max-concurrent", "--limit-concurrency"),
        "max_concurrent",
        "Per-worker in-flight limit; above it answer 503 with Retry-After.",
        "N",
    ),
    Option(("--instance-id",), "instance_id", "Instance name in headers, logs and metrics.", "ID"),
    Option(
        ("--instance-header",),
        "instance_header",
        "Response header carrying the instance id. [X-Instance-Id]",
        "NAME",
    ),
    Option(
        ("--health-path",),
        "health_paths",
        "Paths that bypass --max-concurrent; repeatable. [/health /ready /metrics]",
        "PATH",
    ),
    Option(
        ("--slow-request-ms",),
        "slow_request_ms",
        "Log requests slower than this as warnings.",
        "MS",
    ),
    Option(
        ("--metrics-bind",),
        "metrics_bind",
        "Serve Prometheus metrics (all workers) on HOST:PORT.",
        "ADDRESS",
    ),
    Option(
        ("--metrics-path",), "metrics_path", "Also serve metrics at PATH on the app port.", "PATH"
    ),
    Option(
        ("--metrics-pid-label",),
        "metrics_pid_label",
        "App gauges in multiprocess_mode all/liveall: one series per live worker with a pid"
        " label, instead of their sum.",
    ),
    Option(
        ("--control-socket",),
        "control_socket",
        "Unix socket for `supervisor status`. [beside --pid]",
        "PATH",
    ),
    Option(("--reload",), "reload", "Restart workers when source files change (development)."),
    Option(("--reload-dir",), "reload_dirs", "Directory to watch; repeatable. [APP dir]", "DIR"),
    Option(("--reload-include",), "reload_includes", "Glob to watch; repeatable. [*.py]", "GLOB"),
    Option(("--reload-exclude",), "reload_excludes", "Glob to ignore; repeatable.", "GLOB"),
    Option(("--reload-delay",), "reload_delay", "Debounce for --reload. [0.1]", "SECONDS"),
    Option(("--pid", "-p"), "pid", "Write the supervisor's pid to this file.", "FILE"),
    Option(
        ("--log-level",),
        "log_level",
        "Log level. [info]",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
    ),
    Option(("--log-format",), "log_format", "Log format. [text]", choices=("text", "json")),
    Option(
        ("--log-file", "--error-logfile"),
        "log_file",
        "Write logs to FILE instead of stderr ('-' = stderr); SIGUSR1 reopens it.",
        "FILE",
    ),
    Option(
        ("--log-config",),
        "log_config",
        "Logging configuration file (dictConfig .json/.yaml, or fileConfig .ini), applied in"
        " the supervisor and every worker instead of our own handlers.",
        "FILE",
    ),
    Option(
        ("--access-log",),
        "access_log",
        "Log every request. [on]",
        negative="--no-access-log",
    ),
    Option(
        ("--access-logfile",),
        "access_log_file",
        "Write access lines to FILE ('-' = stdout) instead of the main log; SIGUSR1 reopens it.",
        "FILE",
    ),
    Option(
        ("--access-log-format", "--access-logformat"),
        "access_log_format",
        "Access line in gunicorn's atoms, e.g. '%%(h)s %%(l)s %%(u)s %%(t)s \"%%(r)s\" %%(s)s"
        " %%(b)s'. [client, request line, status, duration]",
        "FORMAT",
    ),
    Option(
        ("--proxy-headers",),
        "proxy_headers",
        "Trust X-Forwarded-For/-Proto from --forwarded-allow-ips. [on]",
        negative="--no-proxy-headers",
    ),
    Option(
        ("--forwarded-allow-ips",),
        "forwarded_allow_ips",
        "Comma-separated IPs/networks trusted for proxy headers, or '*'. [127.0.0.1]",
        "IPS",
    ),
    Option(("--root-path",), "root_path", "ASGI root_path for apps behind a path prefix.", "PATH"),
    Option(("--loop",), "loop", "Event loop: auto, asyncio, uvloop or module:factory. [auto]"),
    Option(
        ("--http",),
        "http",
        "HTTP implementation: auto, h11, httptools or zttp (HTTP/2 with --http2). [auto]",
    ),
    Option(("--ws",), "ws", "WebSocket implementation: auto, none, websockets, wsproto. [auto]"),
    Option(
        ("--lifespan",),
        "lifespan",
        "ASGI lifespan: auto, on or off. [auto]",
        choices=("auto", "on", "off"),
    ),
    Option(
        ("--env-file",),
        "env_file",
        "Load environment variables from FILE (re-read on HUP).",
        "FILE",
    ),
    Option(
        ("--server-header",),
        "server_header",
        "Send a Server header. [on]",
        negative="--no-server-header",
    ),
    Option(
        ("--date-header",), "date_header", "Send a Date header. [on]", negative="--no-date-header"
    ),
    *PARITY_OPTIONS,
)
_BY_FIELD = {option.field: option for option in OPTIONS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not a usage block: the user can ask for --help.
        self.exit(EXIT_USAGE, f"supervisor: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(
        prog="python -m supervisor",
        description="Run an ASGI app with N Uvicorn workers on one shared socket: recycling,"
        " zero-drop restarts (SIGHUP), graceful drain (SIGTERM).",
        epilog=f"Every option can also be set with an environment variable: {ENV_PREFIX}"
        "<OPTION> (e.g. SUPERVISOR_MAX_REQUESTS=1000). Precedence: flags > environment >"
        " --config file > defaults. Exit codes: 0 clean stop, 1 error, 2 usage,"
        " 3 worker boot failure, 4 app load failure. Extra arguments can come from"
        f" {CMD_ARGS_ENV}, or from GUNICORN_CMD_ARGS (gunicorn spellings translated).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("app", nargs="?", metavar="APP", help='The ASGI app, "module:attribute".')
    parser.add_argument(
        "-c",
        "--config",
        dest="config_file",
        metavar="FILE",
        help="A gunicorn-style Python config file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="Load the configuration and import the app, then exit (0 = fine).",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="Print the effective settings, each with its source, then exit.",
    )
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.field, "help": option.help}
        if option.valued:
            parser.add_argument(*option.flags, type=_boolean, metavar=option.metavar, **kwargs)
            continue
        if option.field in BOOL_FIELDS:
            parser.add_argument(*option.flags, action="store_true", **kwargs)
            if option.negative:
                parser.add_argument(
                    option.negative,
                    action="store_false",
                    dest=option.field,
                    help=f"Turn {option.flags[-1]} off.",
                )
            continue
        if option.field in LIST_FIELDS:
            kwargs["action"] = "append"
        if option.choices:
            kwargs["choices"] = option.choices
        parser.add_argument(*option.flags, metavar=option.metavar, **kwargs)
    return parser


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in _TRUE | _FALSE:
        raise argparse.ArgumentTypeError(f"use true or false, not {text!r}")
    return lowered in _TRUE


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from SUPERVISOR_* variables (strings, coerced by make_config)."""
    settings: dict[str, Any] = {}
    for field in _BY_FIELD:
        name = ENV_PREFIX + field.upper()
        if name not in environ:
            continue
        raw = environ[name]
        if field in BOOL_FIELDS:
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ConfigError(f"{name}={raw!r}: use true or false.")
            settings[field] = lowered in _TRUE
        else:
            settings[field] = raw
    if "SUPERVISOR_APP" in environ:
        settings["app"] = environ["SUPERVISOR_APP"]
    return settings
