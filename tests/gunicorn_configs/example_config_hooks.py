# Models: gunicorn's own examples/example_config.py hooks, pasted into many projects:
# log lines in post_fork/pre_fork/pre_exec/when_ready, a stack dump in worker_int, a
# message in worker_abort. The test sends SIGUSR2 (binary upgrade).
# gunicorn: pre_exec runs in a fork of the master right before it re-executes itself; the
# new master loads this file again and starts its own workers beside the old ones.
import os
import sys
import threading
import traceback

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
loglevel = "info"
accesslog = "-"


def post_fork(server, worker):
    record("post_fork", server, worker)
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def pre_fork(server, worker):
    record("pre_fork", server, worker)


def pre_exec(server):
    record("pre_exec", server)
    server.log.info("Forked child, re-executing.")


def when_ready(server):
    record("when_ready", server)
    server.log.info("Server is ready. Spawning workers")


def worker_int(worker):
    record("worker_int", None, worker)
    worker.log.info("worker received INT or QUIT signal")
    id2name = {th.ident: th.name for th in threading.enumerate()}
    code = []
    for thread_id, stack in sys._current_frames().items():
        code.append("\n# Thread: %s(%d)" % (id2name.get(thread_id, ""), thread_id))
        for filename, lineno, name, line in traceback.extract_stack(stack):
            code.append('File: "%s", line %d, in %s' % (filename, lineno, name))
            if line:
                code.append("  %s" % (line.strip()))
    worker.log.debug("\n".join(code))


def worker_abort(worker):
    record("worker_abort", None, worker)
    worker.log.info("worker received SIGABRT signal")
