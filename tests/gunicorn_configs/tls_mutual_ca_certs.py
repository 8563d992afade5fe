# Models: mutual TLS for service-to-service traffic: a CA bundle and CERT_REQUIRED.
# gunicorn: UvicornWorker passes ca_certs and cert_reqs to uvicorn (ssl_ca_certs,
# ssl_cert_reqs): a client without a certificate signed by the CA is refused in the
# handshake.
import os
import ssl

bind = os.environ["BIND"]
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
certfile = os.environ["CERTFILE"]
keyfile = os.environ["KEYFILE"]
ca_certs = os.environ["CA_CERTS"]
cert_reqs = ssl.CERT_REQUIRED
accesslog = "-"
