# Models: preload_app to share memory copy-on-write and fail fast on import errors.
# gunicorn: imports the app in the master while it builds the arbiter, before on_starting,
# so every hook (and every worker) already has it in sys.modules.
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
preload_app = True


def on_starting(server):
    record("on_starting", server)


def when_ready(server):
    record("when_ready", server)


def post_fork(server, worker):
    record("post_fork", server, worker)
