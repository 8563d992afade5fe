# Models: the smallest config in the wild: bind, workers, worker_class, nothing else.
# gunicorn: no `accesslog`, so no access lines at all; errors go to stderr ("-").
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
