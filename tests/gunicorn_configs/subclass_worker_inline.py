# Models: a UvicornWorker subclass defined in the config file itself and passed as a class.
# gunicorn: worker_class accepts a class object; its CONFIG_KWARGS (no Server header,
# asyncio loop) reach uvicorn.
import os

from uvicorn_worker import UvicornWorker

bind = os.environ["BIND"]
workers = 2
accesslog = "-"


class NoServerHeaderWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "auto", "server_header": False}


worker_class = NoServerHeaderWorker
