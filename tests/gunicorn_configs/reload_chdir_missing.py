# Models: a development config with reload = True and a chdir left over from another
# machine.
# gunicorn: refuses to start with one line: "Error: can't chdir to '/nonexistent/...'"
# and a non-zero exit code.
bind = "127.0.0.1:0"
workers = 1
worker_class = "uvicorn_worker.UvicornWorker"
reload = True
chdir = "/nonexistent/corpus/release"
