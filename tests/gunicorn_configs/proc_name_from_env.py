# Models: several services on one host told apart in ps by a name from the environment.
# gunicorn: "gunicorn: master [billing-api]" / "gunicorn: worker [billing-api]" (setproctitle
# installed); without proc_name the name would be the APP argument.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
proc_name = os.getenv("APP_NAME", "api")
