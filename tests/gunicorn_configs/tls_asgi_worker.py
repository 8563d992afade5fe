# Models: TLS with gunicorn's own ASGI worker (gunicorn 24+, `worker_class = "asgi"`).
# gunicorn: the asgi worker wraps its listeners with the context built by the ssl_context
# hook (when one is defined), so here the hook is called in each worker.
import os
import ssl

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "asgi"
certfile = os.environ["CERTFILE"]
keyfile = os.environ["KEYFILE"]
accesslog = "-"


def ssl_context(config, default_ssl_context_factory):
    record("ssl_context")
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
