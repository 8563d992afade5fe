# Models: a VM deployment logging to files, with a custom access_log_format that records
# the forwarded client, the duration and the request id header.
# gunicorn: access lines go to the file; errors to error.log. Under UvicornWorker,
# access_log_format is not applied: the lines keep uvicorn's format.
import os

_logs = os.path.join(os.environ["WORKDIR"], "logs")
os.makedirs(_logs, exist_ok=True)

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
accesslog = os.path.join(_logs, "access.log")
errorlog = os.path.join(_logs, "error.log")
loglevel = "info"
access_log_format = (
    '%({x-forwarded-for}i)s %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s '
    '"%(f)s" "%(a)s" %(D)s %({x-request-id}i)s'
)
