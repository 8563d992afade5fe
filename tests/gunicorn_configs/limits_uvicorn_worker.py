# Models: the "Security" section copied from gunicorn's docs into an ASGI project.
# gunicorn: UvicornWorker does not pass limit_request_line/fields/field_size to uvicorn:
# a 2000-byte request line, 40 headers and a 1000-byte header are all served (200).
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
limit_request_line = 1024
limit_request_fields = 20
limit_request_field_size = 512
