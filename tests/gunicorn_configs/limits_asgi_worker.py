# Models: the same limits with gunicorn's own ASGI worker.
# gunicorn: its HTTP parser enforces them: 414 for the long request line, 431 for too many
# or too large header fields.
import os

bind = os.environ["BIND"]
workers = 2
worker_class = "asgi"
limit_request_line = 1024
limit_request_fields = 20
limit_request_field_size = 512
accesslog = "-"
