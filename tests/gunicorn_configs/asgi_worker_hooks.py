# Models: gunicorn's own ASGI worker (gunicorn 24+) with the per-worker hooks.
# gunicorn: post_worker_init after the app is loaded; SIGINT or SIGQUIT to a worker calls
# worker_int; SIGABRT calls worker_abort; both then exit, and worker_exit runs in the
# worker on the way out; the master calls child_exit after reaping it.
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "asgi"
asgi_loop = "asyncio"
asgi_lifespan = "on"
worker_connections = 500
accesslog = "-"


def post_fork(server, worker):
    record("post_fork", server, worker)


def post_worker_init(worker):
    record("post_worker_init", None, worker)


def worker_int(worker):
    record("worker_int", None, worker)


def worker_abort(worker):
    record("worker_abort", None, worker)


def worker_exit(server, worker):
    record("worker_exit", server, worker)


def child_exit(server, worker):
    record("child_exit", server, worker)
