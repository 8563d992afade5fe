# Models: nginx in front, talking to gunicorn over a unix socket; numeric uid/gid from the
# environment and the umask as a string, as Ansible templates write them.
# gunicorn: the socket is created by the root master under the umask (0o007 -> srwxrwx---)
# and chowned to user/group, so nginx in that group can connect; workers run as that uid.
import os

bind = "unix:" + os.path.join(os.environ["WORKDIR"], "app.sock")
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
user = int(os.environ.get("APP_UID", "65534"))
group = int(os.environ.get("APP_GID", "65534"))
umask = os.environ.get("APP_UMASK", "0o007")
accesslog = "-"
