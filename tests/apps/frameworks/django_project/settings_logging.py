"""The same project with a typical LOGGING dict, as Django's logging how-to shows it."""

from __future__ import annotations

from tests.apps.frameworks.django_project.settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "verbose": {
            "format": "DJANGOTEXT {levelname} {asctime} {name} {process:d} {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "verbose"},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Copied from uvicorn's LOGGING_CONFIG by many projects: access lines to stdout.
        "uvicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
