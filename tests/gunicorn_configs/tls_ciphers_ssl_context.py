# Models: a hardened TLS config: a cipher list, the deprecated ssl_version, the handshake
# settings, and an ssl_context hook that raises the minimum protocol version.
# gunicorn: ciphers and ssl_version reach uvicorn; do_handshake_on_connect and
# suppress_ragged_eofs do not; and UvicornWorker never calls the ssl_context hook (uvicorn
# builds its own SSLContext from the ssl_* arguments), so the hook's record never appears.
import os
import ssl

from tests.gunicorn_configs._hooklog import record

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
certfile = os.environ["CERTFILE"]
keyfile = os.environ["KEYFILE"]
ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"
ssl_version = ssl.PROTOCOL_TLS_SERVER
do_handshake_on_connect = True
suppress_ragged_eofs = True


def ssl_context(config, default_ssl_context_factory):
    record("ssl_context")
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
