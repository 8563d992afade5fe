# Models: prometheus_client's documented gunicorn config: one child_exit hook.
# gunicorn: child_exit runs in the master after it reaped the worker (worker.pid is the
# dead worker's pid); PROMETHEUS_MULTIPROC_DIR must be set before the workers start.
import os

from prometheus_client import multiprocess

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"


def child_exit(server, worker):
    record("child_exit", server, worker)
    multiprocess.mark_process_dead(worker.pid)
