# Models: a project deployed under /srv with its settings in raw_env, a vendored lib dir on
# pythonpath and chdir into the release directory.
# gunicorn: chdir() really changes the master's (and so the workers') working directory and
# puts it first on sys.path; pythonpath entries are added to sys.path; raw_env is exported
# in the master and again in every worker before the app loads.
import os

from tests.gunicorn_configs._hooklog import record

_workdir = os.environ["WORKDIR"]

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
chdir = os.path.join(_workdir, "release")
pythonpath = os.path.join(_workdir, "vendor") + "," + os.path.join(_workdir, "lib")
raw_env = ["APP_MODE=corpus", "DJANGO_SETTINGS_MODULE=app.settings.prod", "EMPTY="]


def post_fork(server, worker):
    record("post_fork", server, worker, env=["APP_MODE"])


def post_worker_init(worker):
    import sys

    record(
        "post_worker_init",
        None,
        worker,
        env=["APP_MODE", "DJANGO_SETTINGS_MODULE", "EMPTY"],
        vendor_on_path=os.path.join(_workdir, "vendor") in sys.path,
        lib_on_path=os.path.join(_workdir, "lib") in sys.path,
    )
