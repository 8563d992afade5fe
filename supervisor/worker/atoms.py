"""``--access-log-format``: gunicorn's access-log atoms, compiled once into a function.

gunicorn's default is ``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s"
"%(a)s"``; any ``%``-conversion gunicorn would accept works (``%(D)d``,
``%(s)5s``). The format is compiled at start into a function that computes
only the atoms it uses; an unknown atom is a configuration error, not a
silent "-" as under gunicorn.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from typing import Any

from supervisor.errors import ConfigError
from supervisor.logs.formats import Clock
from supervisor.worker.exchange import Exchange, raw_target

GUNICORN_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
SIMPLE_ATOMS = frozenset("hlutrsmUqHbBfaTDMLp")
# %[(key)][flags][width][.precision][length modifier]type, as Python's % operator reads it.
_PLACEHOLDER = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?(?P<spec>[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<type>.?))"
)
_VALID_TYPES = set("diouxXeEfFgGcrsa%")


# gunicorn's atoms -------------------------------------------------------------------

_ATOM_CODE = {
    "h": '(sc["client"][0] if sc["client"] else "-")',
    "l": '"-"',
    "u": "_user(sc)",
    "t": "_clf()",
    "r": '_q("%s %s HTTP/%s" % (sc["method"], c.target.decode("latin-1"), sc["http_version"]))',
    "s": "c.status",
    "m": 'sc["method"]',
    "U": '_q(sc["path"])',
    "q": '_q(sc["query_string"].decode("latin-1"))',
    "H": '"HTTP/" + sc["http_version"]',
    "b": "str(c.sent)",
    "B": "c.sent",
    "f": '_q(_header(sc, b"referer"))',
    "a": '_q(_header(sc, b"user-agent"))',
    "T": "int(c.duration)",
    "D": "int(c.duration * 1000000)",
    "M": "int(c.duration * 1000)",
    "L": '"%d.%06d" % divmod(int(c.duration * 1000000), 1000000)',
    "p": "_pid",
}


def _quote(value: str) -> str:
    # gunicorn's SafeAtoms: a '"' inside a value cannot close the quotes around it.
    return value.replace('"', '\\"')


def _header(scope: Any, name: bytes) -> str:
    found = "-"
    for key, value in scope["headers"]:
        if key == name:
            found = value.decode("latin-1")  # gunicorn keeps the last value
    return found


def _response_header(exchange: Exchange, name: bytes) -> str:
    found = "-"
    for key, value in exchange.response_headers or ():
        if key.lower() == name:
            found = value.decode("latin-1")
    return found


def _user(scope: Any) -> str:
    auth = _header(scope, b"authorization")
    if not auth.lower().startswith("basic "):
        return "-"
    try:
        decoded = base64.b64decode(auth.split(" ", 1)[1].strip().encode(), validate=False)
        return _quote(decoded.split(b":", 1)[0].decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, IndexError):
        return "-"


def _environ(scope: Any, key: str) -> str:
    """gunicorn's ``%({NAME}e)s``: the request's WSGI-style environ, as its ASGI worker makes it."""
    client = scope.get("client")
    fixed: dict[str, Callable[[], object]] = {
        "request_method": lambda: scope["method"],
        "raw_uri": lambda: raw_target(scope).decode("latin-1"),
        "path_info": lambda: scope["path"],
        "query_string": lambda: scope["query_string"].decode("latin-1"),
        "server_protocol": lambda: "HTTP/" + scope["http_version"],
        "remote_addr": lambda: client[0] if client else "-",
        "remote_port": lambda: str(client[1]) if client else "-",
        "script_name": lambda: scope.get("root_path", ""),
        "wsgi.url_scheme": lambda: scope.get("scheme", "http"),
    }
    if key in fixed:
        return _quote(str(fixed[key]()))
    if key.startswith("http_"):
        return _quote(_header(scope, key[5:].replace("_", "-").encode("latin-1")))
    return "-"


class FormattedLine:
    """A compiled ``--access-log-format``: ``text(exchange)`` and the line in bytes."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        template, exprs = compile_format(fmt)
        clock = Clock()
        namespace: dict[str, Any] = {
            "_T": template,
            "_q": _quote,
            "_header": _header,
            "_rheader": _response_header,
            "_user": _user,
            "_environ": _environ,
            "_clf": lambda: clock.clf(time.time()),
            "_pid": f"<{os.getpid()}>",
        }
        values = ", ".join(exprs)
        source = (
            f"def text(c):\n    sc = c.scope\n    return _T % ({values}{',' if exprs else ''})\n"
        )
        exec(compile(source, "<access-log-format>", "exec"), namespace)
        self.text: Callable[[Exchange], str] = namespace["text"]
        self.uses_response_headers = any("_rheader" in expr for expr in exprs)

    def __call__(self, c: Exchange) -> bytes:
        try:
            return (self.text(c) + "\n").encode("utf-8", "replace")
        except (TypeError, ValueError, OverflowError) as exc:
            # A conversion that only fails on some values: the exchange is still logged.
            return (
                f"--access-log-format failed ({exc}): {c.client_text}"
                f' "{c.scope["method"]} {c.target.decode("latin-1")}" {c.status}\n'
            ).encode("utf-8", "replace")


def compile_format(fmt: str) -> tuple[str, list[str]]:
    """gunicorn atoms -> (a positional % template, the Python expression of each value)."""
    template: list[str] = []
    exprs: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(fmt):
        template.append(fmt[position : match.start()])
        position = match.end()
        key, spec, kind = match.group("key"), match.group("spec"), match.group("type")
        if kind == "%" and key is None:
            template.append("%%")
            continue
        if kind not in _VALID_TYPES or "*" in spec:
            raise ConfigError(
                f"--access-log-format: {match.group(0)!r} is not a valid % conversion."
            )
        if key is None:
            raise ConfigError(
                f"--access-log-format: {match.group(0)!r} needs an atom name, e.g. %(s)s."
            )
        exprs.append(_atom_expression(key))
        template.append("%" + spec)
    template.append(fmt[position:])
    return "".join(template), exprs


def _atom_expression(key: str) -> str:
    if key in SIMPLE_ATOMS:
        return _ATOM_CODE[key]
    match = re.fullmatch(r"\{([^{}]+)\}([ioe])", key)
    if match is None:
        known = " ".join(sorted(SIMPLE_ATOMS, key=str.lower))
        raise ConfigError(
            f"--access-log-format: unknown atom %({key})s; use one of {known},"
            " {header}i, {header}o or {variable}e."
        )
    name, kind = match.group(1).lower(), match.group(2)
    if kind == "i":
        return f"_q(_header(sc, {name.encode('latin-1')!r}))"
    if kind == "o":
        return f"_q(_rheader(c, {name.encode('latin-1')!r}))"
    return f"_environ(sc, {name!r})"


def check_format(fmt: str) -> None:
    """Compile and try ``fmt`` once at start: any problem is one line, exit 2."""
    line = FormattedLine(fmt)
    try:
        line.text(_Sample())
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ConfigError(f"--access-log-format {fmt!r}: {exc}.") from exc


class _Sample:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"q=1",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "headers": [(b"user-agent", b"check")],
    }
    status = 200
    sent = 2
    duration = 0.001
    request_id: bytes | None = None
    response_headers = [(b"content-type", b"text/plain")]
    target = b"/?q=1"
    method = b"GET"
    client_text = "127.0.0.1:5000"
