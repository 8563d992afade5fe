"""--http zttp (uvicorn's HTTP/1.1 + HTTP/2 parser) needs the zttp package: checked once
at start, so a missing one is one line instead of every worker failing to boot."""

from __future__ import annotations

import importlib
import importlib.util

from supervisor.config import Config
from supervisor.errors import ConfigError


def check(config: Config) -> None:
    if config.http != "zttp":
        return
    if importlib.util.find_spec("zttp") is None:
        raise ConfigError(
            "--http zttp: the zttp package is not installed here (pip install zttp); HTTP/2"
            " (--http2) needs it."
        )
    try:  # installed but broken (no wheel for this platform, a stale build): say so once
        importlib.import_module("zttp")
    except ImportError as exc:
        raise ConfigError(
            f"--http zttp: the zttp package does not import here ({exc}); reinstall it"
            " (pip install --force-reinstall zttp)."
        ) from exc
