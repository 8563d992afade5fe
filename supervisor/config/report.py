"""``--check-config`` and ``--print-config``, as gunicorn has them.

``--check-config`` does everything a start does short of binding and forking: the
configuration, the working directory, the certificate, the user, and the app's import;
then exits 0, or 2 (configuration) / 4 (the app) with the problem in one line.
``--print-config`` prints the effective settings, one a line, each with where it came
from: flag, environment, config file or default.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from supervisor.config.model import Config
from supervisor.errors import AppLoadError, ConfigError


def sources(config: Config, layers: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Any, str]]:
    """(setting, effective value, source) for every setting, in Config's order.

    ``layers`` maps a source name to the settings it gave, highest precedence first.
    """
    rows = []
    for name, value in msgspec.structs.asdict(config).items():
        source = next((where for where, given in layers.items() if name in given), "default")
        rows.append((name, value, source))
    return rows


def render(rows: list[tuple[str, Any, str]]) -> str:
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}} = {value!r}  # {source}" for name, value, source in rows)


def check(config: Config) -> str:
    """Everything a start checks before binding; the one-line verdict, or an exception."""
    from supervisor.system import privileges, workdir  # noqa: PLC0415 - only when asked
    from supervisor.worker import AppLoadFailure, http_choice, load_app, tls  # noqa: PLC0415

    workdir.enter(config)
    tls.check(config)
    http_choice.check(config)
    privileges.resolve(config.user, config.group)
    app_dir = str(Path(config.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        load_app(config)
    except AppLoadFailure as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise AppLoadError(lines[-1] if lines else "the app failed to load") from exc
    return f"Configuration OK: {config.app} loads, {config.workers} worker(s)."


__all__ = ["ConfigError", "check", "render", "sources"]
