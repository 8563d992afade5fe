"""From argv and the environment to the settings a Config is made of (and the hooks and
warnings of a --config file). Precedence, highest first: command line, environment,
config file, defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from supervisor.config.model import ENV_PREFIX
from supervisor.config.options import build_parser, env_settings


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; list settings from a higher layer replace, never append."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({key: value for key, value in layer.items() if value is not None})
    return merged


class Invocation(NamedTuple):
    """What the command line asked for, resolved."""

    settings: dict[str, Any]
    config_file: str | None
    file_settings: dict[str, Any]
    hooks: dict[str, Any]
    warnings: list[str]
    notes: tuple[str, ...] = ()  # info lines: config-file settings that do not apply here
    action: str | None = None  # "check" (--check-config) or "print" (--print-config)
    layers: dict[str, dict[str, Any]] = {}  # source -> settings it gave, highest first


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    from supervisor.config import cmdargs  # noqa: PLC0415
    from supervisor.config import gunicorn as config_file_module  # noqa: PLC0415

    parser = build_parser()
    extra, env_warnings = cmdargs.cmd_args(environ)
    args, argv_warnings = cmdargs.gunicorn_argv(argv)
    namespace = vars(parser.parse_args([*extra, *args]))
    action = "check" if namespace.pop("check_config", False) else None
    action = "print" if namespace.pop("print_config", False) else action
    config_file = namespace.pop("config_file", None) or environ.get(ENV_PREFIX + "CONFIG")
    file_settings: dict[str, Any] = {}
    hooks: dict[str, Any] = {}
    warnings: list[str] = [*env_warnings, *argv_warnings]
    notes: tuple[str, ...] = ()
    if config_file:
        loaded = config_file_module.load(config_file)
        file_settings, hooks = loaded.settings, loaded.hooks
        warnings.extend(loaded.warnings)
        notes = tuple(f"Config file {config_file}: {note}." for note in loaded.notes)
    environment = env_settings(environ)
    settings = merge_settings(file_settings, environment, namespace)
    flags = set(vars(parser.parse_args(args))) if action == "print" else set()
    layers = {
        "flag": {key: namespace[key] for key in flags if key in namespace},
        "environment": {**environment, **{k: v for k, v in namespace.items() if k not in flags}},
        "config file": file_settings,
    }
    return Invocation(settings, config_file, file_settings, hooks, warnings, notes, action, layers)
