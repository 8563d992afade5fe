"""SIGHUP re-reads the configuration: what of a new Config the next workers can use.

A roll forks new workers, so whatever a worker reads from its Config at fork
(limits, timeouts, log level, the access-log format, the app itself) changes
with it; the worker count and the hooks change in the supervisor. What the
supervisor set up once at start (the listening sockets, --preload's imported
app, its own log files, the pid file, the control socket, the --reload
watcher, uvicorn's protocol classes) needs a restart: those are named, and
kept at their running values, so the roll never half-applies one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from supervisor.config.model import Config, make_config, option_name, replace

# Set up once at start: a new value needs a restart (or, but for the sockets, a USR2).
RESTART_ONLY = frozenset(
    {
        "host",
        "port",
        "bind",
        "uds",
        "reuse_port",
        "backlog",
        "preload",
        "pid",
        "control_socket",
        "metrics_bind",
        "reload",
        "reload_dirs",
        "reload_includes",
        "reload_excludes",
        "reload_delay",
        "log_format",
        "log_file",
        "log_config",
        "log_config_dict",
        "access_log_file",
        "app_dir",
        "env_file",
        "loop",
        "http",
        "ws",
        "lifespan",
    }
)
# With --preload the app was imported once, in the supervisor.
PRELOADED = frozenset({"app", "factory"})


class Plan(msgspec.Struct, frozen=True):
    """The Config to run with from now on, and what differs from the running one."""

    config: Config
    applied: tuple[tuple[str, Any, Any], ...]  # (field, old, new)
    ignored: tuple[str, ...]  # fields that changed but need a restart

    def describe_applied(self) -> str:
        return ", ".join(
            f"{option_name(f)} {_show(old)} -> {_show(new)}" for f, old, new in self.applied
        )

    def describe_ignored(self) -> str:
        return ", ".join(option_name(f) for f in self.ignored)


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def plan(running: Config, reread: Config) -> Plan:
    """What of ``reread`` applies to the next workers; the rest keeps ``running``'s value."""
    if reread.instance_id is None:  # the default (hostname-pid) was filled in at start
        reread = replace(reread, instance_id=running.instance_id)
    fixed = RESTART_ONLY | (PRELOADED if running.preload else frozenset())
    applied: list[tuple[str, Any, Any]] = []
    ignored: list[str] = []
    keep: dict[str, Any] = {}
    for field in Config.__struct_fields__:
        old, new = getattr(running, field), getattr(reread, field)
        if old == new:
            continue
        if field in fixed:
            ignored.append(field)
            keep[field] = old
        else:
            applied.append((field, old, new))
    config = replace(reread, **keep) if keep else reread
    return Plan(config, tuple(applied), tuple(ignored))


def reread_config(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[Config, dict[str, Any], list[str]]:
    """The command line and environment parsed again, with the --config file read again:
    the Config, the file's hooks and its warnings. ConfigError when it no longer loads."""
    from supervisor.config.cli import parse  # noqa: PLC0415

    invocation = parse(argv, environ)
    return make_config(invocation.settings), invocation.hooks, invocation.warnings
