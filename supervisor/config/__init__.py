"""Configuration: one typed, validated Config from the command line, the environment,
a gunicorn-style config file or the Python API."""

from __future__ import annotations

from supervisor.config.model import (
    BOOL_FIELDS,
    DEFAULT_HEALTH_PATHS,
    ENV_PREFIX,
    FIELD_NAMES,
    LIST_FIELDS,
    SIZE_FIELDS,
    Config,
    format_size,
    make_config,
    option_name,
    parse_size,
    replace,
    resolve_auto_memory,
    resolve_auto_workers,
)

__all__ = [
    "BOOL_FIELDS",
    "DEFAULT_HEALTH_PATHS",
    "ENV_PREFIX",
    "FIELD_NAMES",
    "LIST_FIELDS",
    "SIZE_FIELDS",
    "Config",
    "format_size",
    "make_config",
    "option_name",
    "parse_size",
    "replace",
    "resolve_auto_memory",
    "resolve_auto_workers",
]
