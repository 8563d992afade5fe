# Models: behind a cloud load balancer: trust X-Forwarded-* from any peer, with the
# PROXY-protocol settings copied alongside.
# gunicorn: forwarded_allow_ips reaches uvicorn (a request from 127.0.0.2 with
# X-Forwarded-For: 203.0.113.9 is logged as 203.0.113.9); proxy_protocol and
# proxy_allow_ips are not used by UvicornWorker (plain requests keep working).
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
forwarded_allow_ips = "*"
proxy_protocol = False
proxy_allow_ips = "127.0.0.1,::1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
accesslog = "-"
