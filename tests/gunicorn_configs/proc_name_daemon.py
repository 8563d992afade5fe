# Models: an init.d-era deployment: daemon mode with a pid file, logs to files, and a
# process name for ps/top.
# gunicorn: forks twice and detaches (the command returns at once with exit code 0; stdio
# goes to /dev/null), writes the pid file, and with setproctitle installed the master
# shows "gunicorn: master [corpus-daemon]" and each worker "gunicorn: worker [corpus-daemon]".
import os

_workdir = os.environ["WORKDIR"]

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
daemon = True
pidfile = os.path.join(_workdir, "app.pid")
proc_name = "corpus-daemon"
accesslog = os.path.join(_workdir, "access.log")
errorlog = os.path.join(_workdir, "error.log")
