"""A gunicorn-style config as a module, for ``--config python:tests.apps.gunicorn_conf``."""

workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
keepalive = 30
