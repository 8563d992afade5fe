# Models: a config defining every server hook (observability-minded projects log each).
# gunicorn with UvicornWorker: master: nworkers_changed (while the arbiter is built, before
# on_starting), on_starting, when_ready (before any worker is forked), pre_fork per worker,
# child_exit per reaped worker, on_reload (SIGHUP), nworkers_changed again on SIGHUP and
# TTIN/TTOU, on_exit last. Worker: post_fork, post_worker_init, worker_exit. worker_int and
# worker_abort are never called: UvicornWorker resets SIGINT/SIGQUIT/SIGABRT and lets
# uvicorn handle them. pre_request/post_request are never called by ASGI workers.
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"


def on_starting(server):
    record("on_starting", server)


def on_reload(server):
    record("on_reload", server)


def when_ready(server):
    record("when_ready", server)


def pre_fork(server, worker):
    record("pre_fork", server, worker)


def post_fork(server, worker):
    record("post_fork", server, worker)


def post_worker_init(worker):
    record("post_worker_init", None, worker)


def worker_int(worker):
    record("worker_int", None, worker)


def worker_abort(worker):
    record("worker_abort", None, worker)


def pre_exec(server):
    record("pre_exec", server)


def pre_request(worker, req):
    record("pre_request", None, worker)


def post_request(worker, req, environ, resp):
    record("post_request", None, worker)


def child_exit(server, worker):
    record("child_exit", server, worker)


def worker_exit(server, worker):
    record("worker_exit", server, worker)


def nworkers_changed(server, new_value, old_value):
    record("nworkers_changed", server, new_value=new_value, old_value=old_value)


def on_exit(server):
    record("on_exit", server)
