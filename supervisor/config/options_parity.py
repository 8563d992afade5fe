"""Options with gunicorn's and uvicorn's meaning that a drop-in needs (issue 17): the
working directory, privilege drop, TLS, request limits; and the ``Option`` row type.

:data:`supervisor.config.options.OPTIONS` lists them last in ``--help``.
"""

from __future__ import annotations

from typing import NamedTuple


class Option(NamedTuple):
    flags: tuple[str, ...]
    field: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    negative: str | None = None  # e.g. "--no-access-log" for boolean options
    valued: bool = False  # a boolean given as a value ("--ws-per-message-deflate false")


PARITY_OPTIONS: tuple[Option, ...] = (
    Option(
        ("--chdir",),
        "chdir",
        "Change to DIR (supervisor and workers) before loading the app, as gunicorn does.",
        "DIR",
    ),
    Option(
        ("--pythonpath",),
        "pythonpath",
        "Comma-separated directories put first on sys.path (gunicorn's --pythonpath).",
        "DIRS",
    ),
    Option(
        ("--capture-output",),
        "capture_output",
        "Redirect stdout and stderr (print(), stray tracebacks) into --log-file.",
    ),
    Option(
        ("-n", "--name", "--proc-name"),
        "proc_name",
        "Name in the process titles: 'supervisor: master [NAME]'. [APP]",
        "NAME",
    ),
    Option(
        ("-u", "--user"),
        "user",
        "Run the workers as this user (name or uid); the supervisor stays root to bind.",
        "USER",
    ),
    Option(("-g", "--group"), "group", "Run the workers in this group. [USER's]", "GROUP"),
    Option(
        ("-m", "--umask"),
        "umask",
        "Umask for the unix sockets the supervisor makes (e.g. 0o007), as gunicorn.",
        "MASK",
    ),
    Option(
        ("--ssl-certfile", "--certfile"),
        "ssl_certfile",
        "Serve HTTPS with this certificate (PEM); every worker serves TLS only.",
        "FILE",
    ),
    Option(("--ssl-keyfile", "--keyfile"), "ssl_keyfile", "The certificate's private key.", "FILE"),
    Option(
        ("--ssl-keyfile-password",),
        "ssl_keyfile_password",
        "Password of --ssl-keyfile.",
        "PASSWORD",
    ),
    Option(
        ("--ssl-version",),
        "ssl_version",
        "ssl module protocol constant. [17: PROTOCOL_TLS_SERVER]",
        "INT",
    ),
    Option(
        ("--ssl-cert-reqs", "--cert-reqs"),
        "ssl_cert_reqs",
        "Client certificates: 0 none, 1 optional, 2 required (see --ssl-ca-certs). [0]",
        "INT",
    ),
    Option(
        ("--ssl-ca-certs", "--ca-certs"),
        "ssl_ca_certs",
        "CA bundle that client certificates are checked against.",
        "FILE",
    ),
    Option(("--ssl-ciphers", "--ciphers"), "ssl_ciphers", "TLS ciphers (OpenSSL list). [TLSv1]"),
    Option(("--ws-max-size",), "ws_max_size", "WebSocket max message size in bytes.", "BYTES"),
    Option(("--ws-max-queue",), "ws_max_queue", "WebSocket message queue length. [32]", "N"),
    Option(("--ws-ping-interval",), "ws_ping_interval", "WebSocket ping interval. [20]", "S"),
    Option(("--ws-ping-timeout",), "ws_ping_timeout", "WebSocket ping timeout. [20]", "S"),
    Option(
        ("--ws-per-message-deflate",),
        "ws_per_message_deflate",
        "WebSocket per-message-deflate compression: true or false. [true]",
        "BOOL",
        valued=True,
    ),
    Option(
        ("--interface",),
        "interface",
        "ASGI3 or ASGI2 (WSGI apps need a WSGI server). [auto]",
        choices=("auto", "asgi3", "asgi2"),
    ),
    Option(("--header",), "headers", "Default response header 'Name:Value'; repeatable.", "HDR"),
    Option(
        ("--h11-max-incomplete-event-size",),
        "h11_max_incomplete_event_size",
        "For h11, the most bytes of an incomplete event to buffer.",
        "BYTES",
    ),
    Option(
        ("--reset-contextvars",),
        "reset_contextvars",
        "Run each request in a fresh contextvars.Context.",
    ),
    Option(("--http2",), "http2", "HTTP/2 beside HTTP/1.1: h2 by ALPN, h2c (needs --http zttp)."),
    Option(
        ("--limit-request-line",),
        "limit_request_line",
        "Answer 414 to a request line longer than N bytes; 0 = no limit. [0]",
        "N",
    ),
    Option(
        ("--limit-request-fields",),
        "limit_request_fields",
        "Answer 431 to a request with more than N header fields; 0 = no limit. [0]",
        "N",
    ),
    Option(
        ("--limit-request-field-size", "--limit-request-field_size"),
        "limit_request_field_size",
        "Answer 431 to a header field longer than N bytes; 0 = no limit. [0]",
        "N",
    ),
)
