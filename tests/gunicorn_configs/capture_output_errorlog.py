# Models: a systemd unit without journald: everything, including print() from the app and
# stray tracebacks, into one error log file; access lines to "-".
# gunicorn: capture_output dup2()s stdout and stderr onto errorlog, so the access lines
# meant for stdout end up in error.log as well.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
errorlog = os.path.join(os.environ["WORKDIR"], "error.log")
accesslog = "-"
capture_output = True
enable_stdio_inheritance = True
loglevel = "info"
