# Models: one server reachable on TCP (health checks) and a unix socket (nginx).
# gunicorn: listens on both; every worker serves both.
import os

bind = [os.environ["BIND"], "unix:" + os.path.join(os.environ["WORKDIR"], "api.sock")]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
