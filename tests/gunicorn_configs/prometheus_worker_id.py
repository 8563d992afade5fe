# Models: the widely copied "stable worker id" recipe for prometheus_client's multiprocess
# mode: ids 1..N handed out in pre_fork, exported to the worker in post_fork, recycled on
# worker exit, resized by nworkers_changed (TTIN/TTOU) and reset on reload (SIGHUP).
# gunicorn: `server` is the one Arbiter and `worker` the object built before the fork, so
# attributes set in one hook are there in the next; nworkers_changed runs first of all
# (while the arbiter is built, before on_starting) and again on SIGHUP; child_exit runs in
# the master. worker_exit would run inside the worker, but under UvicornWorker it never
# runs on SIGTERM: uvicorn re-raises the signal after its shutdown and the worker dies of
# it, so mark_process_dead only happens for workers that end on their own.
import os

from prometheus_client import multiprocess

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"


def on_starting(server):
    record("on_starting", server)
    server._worker_id_overload = set()


def nworkers_changed(server, new_value, old_value):
    record("nworkers_changed", server, new_value=new_value, old_value=old_value)
    server._worker_id_current_workers = new_value


def _next_worker_id(server):
    if hasattr(server, "_worker_id_overload"):
        worker_id_overload = server._worker_id_overload
    else:
        worker_id_overload = set()
    in_use = {w._worker_id for w in tuple(server.WORKERS.values()) if w.alive}
    limit = server._worker_id_current_workers + len(worker_id_overload)
    free = set(range(1, limit + 1)) - in_use
    if not free:
        return "overload"
    return min(free)


def on_reload(server):
    record("on_reload", server, attrs=["server._worker_id_overload"])
    # SIGHUP starts the new workers before the old ones exit: their ids stay taken.
    server._worker_id_overload = {w._worker_id for w in server.WORKERS.values()}


def child_exit(server, worker):
    record("child_exit", server, worker, attrs=["worker._worker_id"])
    server._worker_id_overload.discard(worker._worker_id)


def pre_fork(server, worker):
    worker._worker_id = _next_worker_id(server)
    record("pre_fork", server, worker, attrs=["worker._worker_id"])


def post_fork(server, worker):
    record("post_fork", server, worker, attrs=["worker._worker_id"])
    os.environ["APP_WORKER_ID"] = str(worker._worker_id)


def post_worker_init(worker):
    record("post_worker_init", None, worker, env=["APP_WORKER_ID"])


def worker_exit(server, worker):
    record("worker_exit", server, worker, attrs=["worker._worker_id"])
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(worker.pid)
