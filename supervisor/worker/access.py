"""Access lines, built from what the HTTP protocol already knows about an exchange.

The protocol hands over its request/response cycle (the ASGI scope, the
status, the body bytes sent, the duration); this module turns it into one
line of bytes. Nothing here goes through the logging module: a line is a
``%`` format over a tuple, with the timestamp formatted once a second.

``--access-log-format`` (gunicorn's atoms) is compiled in
:mod:`supervisor.worker.atoms`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

import msgspec

from supervisor.logs.formats import Clock
from supervisor.worker.atoms import GUNICORN_FORMAT, FormattedLine, check_format, compile_format
from supervisor.worker.exchange import Exchange, LineMaker, client_label, raw_target

__all__ = [
    "GUNICORN_FORMAT",
    "TABLE_CAP",
    "DefaultLine",
    "Exchange",
    "FormattedLine",
    "JsonLine",
    "LineMaker",
    "check_format",
    "client_label",
    "compile_format",
    "raw_target",
]

_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "2": b"2"}
TABLE_CAP = 4096  # distinct requests / clients kept per worker; then the table starts over
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
    once, and the part that only depends on what was asked and answered
    (method, path, query, status: the message and those four fields) is made
    once per distinct request and kept in a bounded table, since a service
    answers the same few requests over and over. Per request only the time's
    milliseconds, the duration, the bytes and the request id are written.
    Values that can hold anything (path, query, a client's request id, a
    custom message) go through msgspec's JSON string encoder, so every line
    is valid JSON.
    """

    __slots__ = ("_clients", "_clock", "_custom", "_middles", "_second", "_stamp", "_template")

    def __init__(self, instance: str, custom: FormattedLine | None = None) -> None:
        self._clock = Clock()
        self._custom = custom
        self._second = -1
        self._stamp = b""
        self._clients: dict[str, bytes] = {}
        self._middles: dict[tuple[bytes, bytes, bytes, int], bytes] = {}
        pid = os.getpid()
        head = b'Z","level":"info","logger":"supervisor.access","pid":%d,"instance_id":%b,' % (
            pid,
            _json_str(instance),
        )
        self._template = (
            b"%b%03d"
            + head.replace(b"%", b"%%")
            + b'"client":%b,"worker_pid":'
            + str(pid).encode()
            + b',%b"duration_ms":%.3f,"bytes":%d,"request_id":%b}\n'
        )

    def _client(self, client: str) -> bytes:
        if len(self._clients) > TABLE_CAP:
            self._clients.clear()
        found = self._clients[client] = _json_str(client) if client != "-" else b"null"
        return found

    def _middle(self, c: Exchange, key: tuple[bytes, bytes, bytes, int]) -> bytes:
        """``"message":...,"method":...,"path":...,"query":...,"status":...,`` for one request."""
        scope = c.scope
        method, raw_path, query, status = key
        # The decoded path; when nothing was %-encoded it is the raw path, cheaper to check.
        path = _json_inner(raw_path) if b"%" not in raw_path else _json_str(scope["path"])[1:-1]
        if self._custom is None:
            message = b'"%b %b %d"' % (method, path, status)
        else:
            message = _json_str(self._custom(c)[:-1].decode("utf-8", "replace"))
        middle = b'"message":%b,"method":"%b","path":"%b","query":"%b","status":%d,' % (
            message,
            method,
            path,
            _json_inner(query) if query else b"",
            status,
        )
        if self._custom is None:  # a custom message can hold anything per request
            if len(self._middles) > TABLE_CAP:
                self._middles.clear()
            self._middles[key] = middle
        return middle

    def __call__(self, c: Exchange) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = b'{"timestamp":"' + self._clock.iso(now)[:-4].encode()
        scope = c.scope
        key = (c.method, scope["raw_path"], scope["query_string"], c.status)
        middle = self._middles.get(key) or self._middle(c, key)
        rid = c.request_id
        if rid is None:
            rid_json = b"null"
        elif rid.isalnum():  # ours (hex) and most clients': nothing to escape
            rid_json = b'"%b"' % rid
        else:
            rid_json = _json_str(rid.decode("latin-1"))
        return self._template % (
            self._stamp,
            int((now - second) * 1000),
            self._clients.get(c.client_text) or self._client(c.client_text),
            middle,
            c.duration * 1000,
            c.sent,
            rid_json,
        )
