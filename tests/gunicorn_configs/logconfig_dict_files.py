# Models: logconfig_dict writing to rotating files, without setting `accesslog`: projects
# that configure logging only through the dict.
# gunicorn: merges the dict over its own defaults, whose root logger names a "console"
# handler: a dict that replaces "handlers" must configure "root" too, or gunicorn exits
# with "Unable to configure root logger". accesslog is unset, yet the dict gives gunicorn.access a file handler, and
# UvicornWorker copies gunicorn.access's handlers onto uvicorn.access: access lines land
# in access.log. (gunicorn's own sync workers would log nothing here.)
import os

_logs = os.environ["WORKDIR"]

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "error_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": os.path.join(_logs, "gunicorn.error.log"),
            "maxBytes": 1048576,
            "backupCount": 3,
            "formatter": "plain",
        },
        "access_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": os.path.join(_logs, "gunicorn.access.log"),
            "maxBytes": 1048576,
            "backupCount": 3,
            "formatter": "plain",
        },
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["error_file"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["access_file"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["error_file"], "level": "INFO"},
}
