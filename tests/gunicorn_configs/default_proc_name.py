# Models: a config without proc_name on a host where setproctitle is installed.
# gunicorn: the titles use default_proc_name, the APP argument:
# "gunicorn: master [tests.apps.hello:app]", "gunicorn: worker [tests.apps.hello:app]".
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
