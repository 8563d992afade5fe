# Models: forwarded_allow_ips naming networks (gunicorn 22+ accepts CIDR), not including the
# peer the test connects from.
# gunicorn: the value must be a string (a list is refused: "Not a string"); 127.0.0.2 is
# not trusted, so X-Forwarded-For is ignored and the access line shows 127.0.0.2.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
forwarded_allow_ips = "127.0.0.1,::1,10.0.0.0/8"
accesslog = "-"
