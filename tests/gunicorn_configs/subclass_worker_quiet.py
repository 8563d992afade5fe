# Models: a UvicornWorker subclass with CONFIG_KWARGS access_log=False and no Server/Date
# headers, while the config still says accesslog = "-".
# gunicorn: uvicorn.Config(access_log=False) wins: no access lines at all, and responses
# carry no Server header.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "tests.gunicorn_configs.workers.QuietWorker"
accesslog = "-"
