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
