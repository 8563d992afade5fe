# Models: UvicornH11Worker (pure-Python parser) behind an AWS ALB: keepalive above the
# ALB's 60 s idle timeout, recycling with jitter, a custom backlog.
# gunicorn: UvicornH11Worker's CONFIG_KWARGS pick h11 on asyncio; keepalive=75 becomes
# uvicorn's timeout_keep_alive, max_requests its limit_max_requests.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornH11Worker"
keepalive = 75
max_requests = 1000
max_requests_jitter = 50
backlog = 512
accesslog = "-"
