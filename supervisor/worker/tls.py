"""TLS for every worker: uvicorn's ssl_* settings, checked once by the supervisor.

Each worker builds its SSLContext from the certificate files when it starts (uvicorn's
``create_ssl_context``), so a certificate renewed on disk is served by the workers a
SIGHUP starts, without a restart. The supervisor builds the same context once before
the first fork: a certificate or key that cannot be used is one line and exit 2, never
a plain-HTTP fallback. gunicorn's ``ssl_context(config, factory)`` hook, when the
worker is gunicorn's ``asgi`` one (UvicornWorker never calls it), replaces the context.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.config import create_ssl_context

from supervisor.config import Config
from supervisor.errors import ConfigError


def enabled(config: Config) -> bool:
    return bool(config.ssl_certfile)


def uvicorn_kwargs(config: Config) -> dict[str, Any]:
    if not enabled(config):
        return {}
    return {
        "ssl_keyfile": config.ssl_keyfile,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile_password": config.ssl_keyfile_password,
        "ssl_version": config.ssl_version,
        "ssl_cert_reqs": config.ssl_cert_reqs,
        "ssl_ca_certs": config.ssl_ca_certs,
        "ssl_ciphers": config.ssl_ciphers,
    }


def context_factory(config: Config) -> Callable[[], ssl.SSLContext]:
    def make() -> ssl.SSLContext:
        return create_ssl_context(
            keyfile=config.ssl_keyfile,
            certfile=str(config.ssl_certfile),
            password=config.ssl_keyfile_password,
            ssl_version=config.ssl_version,
            cert_reqs=config.ssl_cert_reqs,
            ca_certs=config.ssl_ca_certs,
            ciphers=config.ssl_ciphers,
        )

    return make


def check(config: Config) -> None:
    """Build the context once, as each worker will: a problem is one line (exit 2)."""
    if config.ssl_keyfile and not config.ssl_certfile:
        raise ConfigError("--ssl-keyfile needs --ssl-certfile (the certificate it signs).")
    if not enabled(config):
        return
    given = {
        "--ssl-certfile": config.ssl_certfile,
        "--ssl-keyfile": config.ssl_keyfile,
        "--ssl-ca-certs": config.ssl_ca_certs,
    }
    for flag, path in given.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"TLS: {flag} {path}: no such file.")
    try:
        context_factory(config)()
    except (OSError, ssl.SSLError, ValueError, TypeError) as exc:
        files = ", ".join(str(f) for f in (config.ssl_certfile, config.ssl_keyfile) if f)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(f"TLS: cannot use the certificate/key {files}: {reason}.") from exc


def custom_context(config: Config, hook: Callable[..., Any] | None) -> ssl.SSLContext | None:
    """The ssl_context hook's context for this worker, or None without a hook."""
    if hook is None or not enabled(config):
        return None
    context = hook(config, context_factory(config))
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"the ssl_context hook returned {type(context).__name__}, not SSLContext")
    return context
