# Models: a trimmed tiangolo-style config as FastAPI projects rewrite it: `from __future__
# import annotations`, `from os import environ`, typed helper variables, a helper function,
# WEB_CONCURRENCY from the environment, and no accesslog at all.
# gunicorn: the imports, helpers and the function are not settings and are ignored
# silently; `accesslog` unset means no access log (UvicornWorker's access logger gets
# gunicorn's empty handler list). WEB_CONCURRENCY="2" is a string, coerced to 2.
from __future__ import annotations

from os import environ

workers_per_core: float = float(environ.get("WORKERS_PER_CORE", "1"))
web_concurrency: str = environ.get("WEB_CONCURRENCY", "2")


def _env_bool(name: str, default: bool = False) -> bool:
    return environ.get(name, str(default)).lower() in ("1", "true", "yes")


def compute_bind() -> str:
    return environ.get("BIND") or f"{environ.get('HOST', '127.0.0.1')}:{environ['PORT']}"


bind = compute_bind()
workers = web_concurrency
worker_class = "uvicorn_worker.UvicornWorker"
loglevel = environ.get("LOG_LEVEL", "info")
keepalive = int(environ.get("KEEP_ALIVE", "65"))  # above the load balancer's 60 s idle timeout
graceful_timeout = 30
reload = _env_bool("DEV_RELOAD")
