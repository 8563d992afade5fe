"""Access lines, built from what the HTTP protocol already knows about an exchange.

The protocol hands over its request/response cycle (the ASGI scope, the
status, the body bytes sent, the duration); this module turns it into one
line of bytes. Nothing here goes through the logging module: a line is a
``%`` format over a tuple, with the timestamp formatted once a second.

``--access-log-format`` takes gunicorn's atoms (``%(h)s %(l)s %(u)s %(t)s
"%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"`` is gunicorn's default) and any
``%``-conversion gunicorn would accept (``%(D)d``, ``%(s)5s``). The format
is compiled once at start into a function computing only the atoms it uses;
an unknown atom is a configuration error, not a silent "-".
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from supervisor.errors import ConfigError
from supervisor.logs.formats import Clock

GUNICORN_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
SIMPLE_ATOMS = frozenset("hlutrsmUqHbBfaTDMLp")
# %[(key)][flags][width][.precision][length modifier]type, as Python's % operator reads it.
_PLACEHOLDER = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?(?P<spec>[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<type>.?))"
)
_VALID_TYPES = set("diouxXeEfFgGcrsa%")


class Exchange(Protocol):
    """What an access line is made of (the protocol's request/response cycle)."""

    scope: Any
    status: int
    sent: int
    duration: float
    request_id: bytes | None
    response_headers: Any
    target: bytes  # the request target as sent (gunicorn's RAW_URI)
    method: bytes  # the request method as sent
    client_text: str  # "host:port", or "-"


LineMaker = Callable[[Exchange], bytes]


def client_label(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def raw_target(scope: Any) -> bytes:
    """The request target rebuilt from a scope: raw path and query."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
    query: bytes = scope["query_string"]
    return raw + b"?" + query if query else raw


_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "2": b"2"}
_json_str = msgspec.json.Encoder().encode  # a str -> its JSON form, quotes included
# Bytes that may not appear raw inside a JSON string (or are not ASCII).
_NOT_JSON_SAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def _json_inner(raw: bytes) -> bytes:
    """``raw`` as the inside of a JSON string; plain ASCII (most paths) is used as it is."""
    if _NOT_JSON_SAFE.search(raw) is None:
        return raw
    return _json_str(raw.decode("latin-1"))[1:-1]


class _Prefixes:
    """Per-second, per-client line prefixes: the time and the client change rarely."""

    __slots__ = ("_clock", "_make", "_second", "_stamp", "by_client")

    def __init__(self, make: Callable[[str, str], bytes], clock: Clock) -> None:
        self._clock = clock
        self._make = make
        self._second = -1
        self._stamp = ""
        self.by_client: dict[str, bytes] = {}

    def get(self, now: float, client: str) -> bytes:
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = self._clock.text(now)
            self.by_client.clear()
        found = self.by_client.get(client)
        if found is None:
            found = self.by_client[client] = self._make(self._stamp, client)
        return found


class DefaultLine:
    """``[time] [pid] [instance] [INFO] 127.0.0.1:5000 - "GET /x HTTP/1.1" 200 1.4ms``.

    The hot path of the default access log: one bytes ``%`` over six values;
    the time, pid and client part is made once per second and client.
    """

    __slots__ = ("_prefixes",)

    def __init__(self, instance: str = "") -> None:
        head = f"] [{os.getpid()}] " + (f"[{instance}] " if instance else "") + "[INFO] "

        def make(stamp: str, client: str) -> bytes:
            return f'[{stamp}{head}{client} - "'.encode("utf-8", "replace")

        self._prefixes = _Prefixes(make, Clock())

    def __call__(self, c: Exchange) -> bytes:
        scope = c.scope
        version = scope["http_version"]
        return b'%b%b %b HTTP/%b" %d %.1fms\n' % (
            self._prefixes.get(time.time(), c.client_text),
            c.method,
            c.target,
            _VERSIONS.get(version) or version.encode("latin-1"),
            c.status,
            c.duration * 1000,
        )


class JsonLine:
    """The JSON access line: the common log fields, then the exchange's.

    A bytes template: what is constant for the worker is baked in, what is
    constant for a second (the time) or a connection (the client) is made
    once; per request only the method, path, query, status, duration, bytes
    and request id are written. Values that can hold anything (path, query,
    a client's request id, a custom message) go through msgspec's JSON
    string encoder, so every line is valid JSON.
    """

    __slots__ = ("_clients", "_clock", "_custom", "_second", "_stamp", "_template")

    def __init__(self, instance: str, custom: FormattedLine | None = None) -> None:
        self._clock = Clock()
        self._custom = custom
        self._second = -1
        self._stamp = b""
        self._clients: dict[str, bytes] = {}
        pid = os.getpid()
        head = b'Z","level":"info","logger":"supervisor.access","pid":%d,"instance_id":%b,' % (
            pid,
            _json_str(instance),
        )
        self._template = (
            head.replace(b"%", b"%%") + b'"client":%b,"worker_pid":' + str(pid).encode() + b","
        )
        if custom is None:
            self._template += b'"message":"%b %b %d",'
        else:
            self._template += b'"message":%b,'
        self._template = (
            b"%b%03d"
            + self._template
            + b'"method":"%b","path":"%b","query":"%b","status":%d,"duration_ms":%.3f,'
            + b'"bytes":%d,"request_id":%b}\n'
        )

    def _client(self, client: str) -> bytes:
        found = self._clients.get(client)
        if found is None:
            if len(self._clients) > 4096:
                self._clients.clear()
            found = self._clients[client] = _json_str(client) if client != "-" else b"null"
        return found

    def __call__(self, c: Exchange) -> bytes:
        scope = c.scope
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = b'{"timestamp":"' + self._clock.iso(now)[:-4].encode()
        # The decoded path; when nothing was %-encoded it is the raw path, cheaper to check.
        raw_path: bytes = scope["raw_path"]
        path = _json_inner(raw_path) if b"%" not in raw_path else _json_str(scope["path"])[1:-1]
        method = c.method
        query: bytes = scope["query_string"]
        rid = c.request_id
        if rid is None:
            rid_json = b"null"
        elif rid.isalnum():  # ours (hex) and most clients': nothing to escape
            rid_json = b'"%b"' % rid
        else:
            rid_json = _json_str(rid.decode("latin-1"))
        query_json = _json_inner(query) if query else b""
        if self._custom is None:
            return self._template % (
                self._stamp,
                int((now - second) * 1000),
                self._client(c.client_text),
                method,
                path,
                c.status,
                method,
                path,
                query_json,
                c.status,
                c.duration * 1000,
                c.sent,
                rid_json,
            )
        return self._template % (
            self._stamp,
            int((now - second) * 1000),
            self._client(c.client_text),
            _json_str(self._custom(c)[:-1].decode("utf-8", "replace")),
            method,
            path,
            query_json,
            c.status,
            c.duration * 1000,
            c.sent,
            rid_json,
        )


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
