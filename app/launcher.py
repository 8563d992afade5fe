"""``python -m app run``: the seed's ``fastagentic run``, on three servers one flag apart.

Options come from flags, else ``FASTAGENTIC_*`` variables, else defaults. The
launcher validates the settings first (one line and exit 2 when one is bad),
hands every option to the workers as ``FASTAGENTIC_*`` variables, then
replaces itself with the chosen server, so signals reach the server directly.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.errors import ConfigError
from app.settings import load

APP = "app.main:app"
SERVERS = ("supervisor", "uvicorn", "gunicorn")
EXIT_USAGE = 2
EXIT_MISSING = 1


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    dest: str
    help: str
    kind: type = str
    default: object = None
    env: tuple[str, ...] = ()

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("FASTAGENTIC_" + self.dest.upper(), *self.env)


OPTIONS = (
    Option(("--server",), "server", "supervisor, uvicorn or gunicorn", default="supervisor"),
    Option(("--host",), "host", "host to bind to", default="127.0.0.1"),
    Option(("--port",), "port", "port to bind to", int, 8000),
    Option(("--workers", "-w"), "workers", "number of worker processes", int, 1),
    Option(("--max-concurrent",), "max_concurrent", "max concurrent requests per worker", int),
    Option(("--instance-id",), "instance_id", "instance id for headers, logs and metrics"),
    Option(
        ("--metrics-bind",),
        "metrics_bind",
        "supervisor: pool-wide Prometheus metrics on HOST:PORT [127.0.0.1:0, a free port]",
    ),
    Option(("--redis-pool-size",), "redis_pool_size", "Redis pool size per worker [10]", int),
    Option(("--db-pool-size",), "db_pool_size", "Postgres pool size per worker [5]", int),
    Option(("--db-max-overflow",), "db_max_overflow", "extra Postgres connections [10]", int),
    Option(
        ("--timeout-graceful",),
        "timeout_graceful",
        "graceful shutdown timeout, seconds [30]",
        float,
        env=("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN",),
    ),
    Option(("--timeout-keep-alive",), "timeout_keep_alive", "keep-alive timeout, s [5]", float),
    Option(("--redis-url",), "redis_url", "Redis URL [in-process queue]", env=("REDIS_URL",)),
    Option(
        ("--database-url",),
        "database_url",
        "Postgres URL [in-process store]",
        env=("DATABASE_URL",),
    ),
    Option(("--log-level",), "log_level", "debug, info, warning or error", default="info"),
    Option(
        ("--forwarded-allow-ips",),
        "trusted_proxies",
        "proxies trusted for X-Forwarded-For and X-User-Id [127.0.0.1,::1]",
        env=("FORWARDED_ALLOW_IPS",),
    ),
)
# Options the app itself reads (as FASTAGENTIC_* in every worker).
APP_SETTINGS = (
    "workers",
    "max_concurrent",
    "instance_id",
    "redis_pool_size",
    "db_pool_size",
    "db_max_overflow",
    "timeout_graceful",
    "timeout_keep_alive",
    "redis_url",
    "database_url",
    "log_level",
    "trusted_proxies",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="serve app.main:app",
        epilog="Every option can also be set as FASTAGENTIC_<OPTION> (e.g. FASTAGENTIC_WORKERS=4)."
        " Arguments after -- go to the server unchanged.",
    )
    for option in OPTIONS:
        run.add_argument(*option.flags, dest=option.dest, help=option.help, default=None)
    run.add_argument("--reload", action="store_true", default=None, help="reload on code changes")
    run.add_argument("--app", default=APP, help=f"the ASGI app [{APP}]")
    run.add_argument(
        "--print-command", action="store_true", help="print the command and exit, do not run it"
    )
    return parser


def resolve_options(namespace: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """Flags over FASTAGENTIC_* variables over defaults, converted; ConfigError names the source."""
    values: dict[str, object] = {}
    for option in OPTIONS:
        raw = getattr(namespace, option.dest)
        source = option.flags[0]
        if raw is None:
            for name in option.env_names:
                if environ.get(name, "").strip():
                    raw, source = environ[name].strip(), name
                    break
        if raw is None:
            values[option.dest] = option.default
            continue
        try:
            values[option.dest] = option.kind(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r}: expected a {option.kind.__name__}.") from None
    reload_env = environ.get("FASTAGENTIC_RELOAD", "").strip().lower() in ("1", "true", "yes")
    values["reload"] = bool(namespace.reload) or reload_env
    if values["server"] not in SERVERS:
        raise ConfigError(f"--server {values['server']!r}: use one of {', '.join(SERVERS)}.")
    if not isinstance(values["workers"], int) or values["workers"] < 1:
        raise ConfigError(f"--workers {values['workers']!r}: use 1 or more.")
    return values


def worker_environment(values: Mapping[str, object], environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the options the app reads, as FASTAGENTIC_* variables."""
    env = dict(environ)
    for dest in APP_SETTINGS:
        value = values.get(dest)
        if value is not None:
            env["FASTAGENTIC_" + dest.upper()] = _text(value)
    return env


def command(values: Mapping[str, object], app: str) -> list[str]:
    """The server's command line; the app and the server share one proxy trust list."""
    argv = _server_command(values, app)
    if values.get("trusted_proxies"):
        argv += ["--forwarded-allow-ips", str(values["trusted_proxies"])]
    return argv


def _server_command(values: Mapping[str, object], app: str) -> list[str]:
    server, host, port = values["server"], str(values["host"]), str(values["port"])
    workers = int(str(values["workers"]))
    graceful = values.get("timeout_graceful")
    keep_alive = values.get("timeout_keep_alive")
    log_level = str(values["log_level"])
    if server == "supervisor":
        argv = [sys.executable, "-m", "supervisor", app, "--host", host, "--port", port]
        argv += ["--workers", str(workers), "--log-level", log_level]
        if graceful is not None:
            argv += ["--timeout-graceful", _text(graceful)]
        if keep_alive is not None:
            argv += ["--timeout-keep-alive", _text(keep_alive)]
        if values.get("instance_id"):
            argv += ["--instance-id", str(values["instance_id"])]
        # On by default: it is what makes every worker's fastagentic_* counters reach
        # GET /metrics on the app's port too, pooled (issue 19).
        argv += ["--metrics-bind", str(values.get("metrics_bind") or "127.0.0.1:0")]
        if values["reload"]:
            argv.append("--reload")
        return argv
    if server == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", port]
        argv += ["--log-level", log_level]
        if values["reload"]:
            argv.append("--reload")
        elif workers > 1:
            argv += ["--workers", str(workers)]
        if graceful is not None:
            argv += ["--timeout-graceful-shutdown", str(round(float(str(graceful))))]
        if keep_alive is not None:
            argv += ["--timeout-keep-alive", str(max(1, round(float(str(keep_alive)))))]
        return argv
    argv = [sys.executable, "-m", "gunicorn", app, "-k", "uvicorn_worker.UvicornWorker"]
    argv += ["--bind", f"{host}:{port}", "--workers", str(workers), "--log-level", log_level]
    if graceful is not None:
        argv += ["--graceful-timeout", _text(graceful)]
    if keep_alive is not None:
        argv += ["--keep-alive", str(max(1, round(float(str(keep_alive)))))]
    if values["reload"]:
        argv.append("--reload")
    return argv


def missing_server(server: str) -> str | None:
    """A one-line install hint when the chosen server's package is not importable."""
    needed = {"gunicorn": ("gunicorn", "uvicorn_worker"), "uvicorn": ("uvicorn",)}
    for module in needed.get(server, ()):
        if importlib.util.find_spec(module) is None:
            return (
                f"--server {server} needs {module}, which is not installed."
                " Make sure to install it: pip install 'asgi-supervisor[gunicorn]'."
            )
    return None


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:  # noqa: RET503 (ends in execve)
    environ = os.environ if environ is None else environ
    args = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, passthrough = args[:at], args[at + 1 :]
    namespace = build_parser().parse_args(args)
    try:
        values = resolve_options(namespace, environ)
        env = worker_environment(values, environ)
        load(env)  # the workers will read exactly this: fail here, once, if it is bad
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    server = str(values["server"])
    if (problem := missing_server(server)) is not None:
        print(f"Error: {problem}", file=sys.stderr)
        return EXIT_MISSING
    argv_out = command(values, namespace.app) + passthrough
    if namespace.print_command:
        settings = {k: v for k, v in env.items() if k.startswith("FASTAGENTIC_")}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(settings.items()))
        print(f"{exports} {shlex.join(argv_out)}".strip())
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_out[0], argv_out, env)
