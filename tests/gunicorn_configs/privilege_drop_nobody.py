# Models: a VM/bare-metal deployment started as root (to bind, read the key) that drops to
# an unprivileged account, with a restrictive umask.
# gunicorn: the master stays root; each worker calls initgroups/setgid/setuid after
# post_fork and before loading the app, so post_fork still runs as root and
# post_worker_init already as nobody. umask is used only for the files gunicorn itself
# makes (unix sockets, worker heartbeat files): the processes keep the inherited umask.
# With initgroups = True gunicorn calls os.initgroups() and never os.setgid(): the workers
# get nobody's supplementary groups but keep the effective gid 0 (root's group).
import os

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
user = "nobody"
group = "nogroup"
umask = 0o027
initgroups = True


def post_fork(server, worker):
    record("post_fork", server, worker)


def post_worker_init(worker):
    record("post_worker_init", None, worker)


def worker_exit(server, worker):
    record("worker_exit", server, worker)
