# Models: the Docker logging config: access and error logs to the container's streams.
# gunicorn: accesslog "-" is stdout, errorlog "-" is stderr. Under UvicornWorker the
# access line is uvicorn's own ('127.0.0.1:PORT - "GET / HTTP/1.1" 200'), because
# uvicorn.access logs through gunicorn's access handlers with the message preformatted.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
accesslog = "-"
errorlog = "-"
loglevel = "info"
capture_output = False
