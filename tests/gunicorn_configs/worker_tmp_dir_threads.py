# Models: settings copied from sync/gthread deployments into an ASGI one: heartbeat files on
# /dev/shm, threads, worker_connections, tmp_upload_dir, sendfile off.
# gunicorn: worker_tmp_dir only moves the heartbeat file; threads, worker_connections,
# tmp_upload_dir and sendfile have no effect under UvicornWorker (and gunicorn says nothing).
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
worker_tmp_dir = "/dev/shm"
threads = 4
worker_connections = 1000
tmp_upload_dir = os.path.join(os.environ["WORKDIR"], "uploads")
sendfile = False
