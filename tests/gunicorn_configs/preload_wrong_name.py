# Models: a config that says `preload = True` (the command-line flag's name, not the
# setting's): a common mistake.
# gunicorn: `preload` is not a setting name, so it is ignored and the app is NOT preloaded:
# the master never imports it; each worker does, after post_fork.
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
preload = True


def when_ready(server):
    record("when_ready", server)


def post_fork(server, worker):
    record("post_fork", server, worker)


def post_worker_init(worker):
    record("post_worker_init", None, worker)
