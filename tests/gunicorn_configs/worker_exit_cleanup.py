# Models: per-worker resources closed in worker_exit (a DB pool, a tracer flush), plus
# child_exit and on_exit in the master, with max_requests recycling. The test recycles a
# worker through max_requests, then stops the server with SIGINT (Ctrl-C).
# gunicorn: a worker that reaches max_requests leaves uvicorn's loop normally, so
# worker_exit runs inside it (its own pid) and child_exit in the master once it is reaped.
# On SIGINT the master sends SIGQUIT, which UvicornWorker only turns into
# `worker.alive = False`: the workers keep running until graceful_timeout and are
# SIGKILLed, so worker_exit does not run then; child_exit and on_exit do.
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 1
worker_class = "uvicorn_worker.UvicornWorker"
max_requests = 40
graceful_timeout = 3


def worker_exit(server, worker):
    record("worker_exit", server, worker)


def child_exit(server, worker):
    record("child_exit", server, worker)


def on_exit(server):
    record("on_exit", server)
