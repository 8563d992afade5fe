# Models: a UvicornWorker subclass in the project's package that trusts every proxy
# (CONFIG_KWARGS forwarded_allow_ips="*", proxy_headers=True, h11 on asyncio).
# gunicorn: CONFIG_KWARGS override gunicorn's own forwarded_allow_ips, so a request from
# 127.0.0.2 with X-Forwarded-For: 203.0.113.9 is logged as 203.0.113.9.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "tests.gunicorn_configs.workers.ProxyTrustingWorker"
accesslog = "-"
