# Models: typos that gunicorn forgives silently: `worker = 4` and `max_request = 500`.
# gunicorn: unknown names are ignored without a word, so this runs with ONE worker and no
# recycling. Issue 17 asks for "did you mean" instead.
import os

bind = os.environ["BIND"]
worker = 4
max_request = 500
worker_class = "uvicorn_worker.UvicornWorker"
