# Models: gunicorn's statsd instrumentation (Datadog-style) kept after moving to ASGI.
# gunicorn: sends its own metrics (workers, request counts from the sync workers' access
# path) to 127.0.0.1:8125 over UDP; under UvicornWorker the request metrics never fire.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
statsd_host = "127.0.0.1:8125"
statsd_prefix = "corpus.api"
dogstatsd_tags = "env:test,service:corpus"
