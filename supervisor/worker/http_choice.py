"""--http zttp (uvicorn's HTTP/1.1 + HTTP/2 parser) needs the zttp package: checked once
at start, so a missing one is one line instead of every worker failing to boot."""

from __future__ import annotations

import importlib.util

from supervisor.config import Config
from supervisor.errors import ConfigError


def check(config: Config) -> None:
    if config.http == "zttp" and importlib.util.find_spec("zttp") is None:
        raise ConfigError(
            "--http zttp: the zttp package is not installed here (pip install zttp); HTTP/2"
            " (--http2) needs it."
        )
