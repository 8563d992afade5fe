# Models: a Helm chart whose values all arrive as strings: `timeout = os.getenv("TIMEOUT",
# 30)` with TIMEOUT=0 to turn the worker watchdog off for long requests.
# gunicorn: every value is coerced by its validator: "0" -> 0 (no timeout: the master never
# kills a slow worker), "2" workers, "10" graceful_timeout, "5" keepalive.
import os

bind = os.getenv("BIND", "127.0.0.1:8000")
workers = os.getenv("WEB_CONCURRENCY", 2)
worker_class = "uvicorn_worker.UvicornWorker"
timeout = os.getenv("TIMEOUT", 30)
graceful_timeout = os.getenv("GRACEFUL_TIMEOUT", "10")
keepalive = os.getenv("KEEPALIVE", 5)
max_requests = os.getenv("MAX_REQUESTS", "0")
max_requests_jitter = os.getenv("MAX_REQUESTS_JITTER", "0")
loglevel = os.getenv("LOG_LEVEL", "info")
