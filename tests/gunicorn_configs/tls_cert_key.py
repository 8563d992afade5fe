# Models: TLS terminated by gunicorn itself (no proxy in front), certificate paths from the
# environment as in a Kubernetes secret mount.
# gunicorn: "Listening at: https://..."; UvicornWorker passes certfile/keyfile to
# uvicorn.Config(ssl_certfile=..., ssl_keyfile=...), so every worker serves HTTPS only.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
certfile = os.environ["CERTFILE"]
keyfile = os.environ["KEYFILE"]
accesslog = "-"
