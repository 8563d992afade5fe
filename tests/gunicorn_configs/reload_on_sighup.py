# Models: a deployment that edits the config and sends SIGHUP: on_reload and when_ready,
# with a module-level line that shows when the file is read.
# gunicorn: SIGHUP re-reads this file (the module-level record runs again in the master),
# calls nworkers_changed and on_reload, starts the new workers, then stops the old ones.
import os

from tests.gunicorn_configs._hooklog import record

record("config-load")

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"


def on_reload(server):
    record("on_reload", server)


def when_ready(server):
    record("when_ready", server)


def post_fork(server, worker):
    record("post_fork", server, worker)


def worker_exit(server, worker):
    record("worker_exit", server, worker)
