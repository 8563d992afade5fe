"""Every error a user can cause, and the exit codes that go with them.

Messages are sentences that say what went wrong and how to fix it; the CLI
prints them as one line, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# Gunicorn's numbers, so tooling that already knows them keeps working.
EXIT_WORKER_BOOT_ERROR = 3
EXIT_APP_LOAD_ERROR = 4


class SupervisorError(Exception):
    """Base class: a failure the supervisor reports as one line and an exit code."""

    exit_code = EXIT_ERROR


class ConfigError(SupervisorError):
    """An option, environment variable or config file holds a value we cannot use."""

    exit_code = EXIT_USAGE


class BindError(SupervisorError):
    """A listening address could not be opened (in use, no permission, bad fd)."""


class AppLoadError(SupervisorError):
    """The ASGI application could not be imported (bad module or attribute)."""

    exit_code = EXIT_APP_LOAD_ERROR


class WorkerBootError(SupervisorError):
    """Workers died before ever serving, so respawning them would only loop."""

    exit_code = EXIT_WORKER_BOOT_ERROR
