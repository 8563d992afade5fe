"""gunicorn's chdir, pythonpath and capture_output, applied in the supervisor at start.

Done before logging opens its files, so that relative paths mean what they mean under
gunicorn; the workers inherit the directory, sys.path and the redirected streams.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from supervisor.config import Config
from supervisor.errors import ConfigError


def enter(config: Config) -> None:
    """gunicorn's chdir (supervisor and workers), pythonpath and capture_output, done before
    logging opens its files so that relative paths mean what they mean under gunicorn."""
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError(f"--chdir {config.chdir}: can't chdir ({exc.strerror}).") from exc
    for entry in reversed([p for item in config.pythonpath for p in item.split(",") if p]):
        path = str(Path(entry).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
    if config.capture_output and config.log_file and config.log_file != "-":
        # gunicorn dup2()s both streams onto the error log: print() and stray tracebacks
        # (and access lines meant for stdout) land in that file.
        try:
            fd = os.open(config.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"--log-file {config.log_file}: {exc.strerror}.") from exc
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
