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
from typing import Any

import msgspec

from supervisor.logs.formats import Clock
from supervisor.worker.atoms import GUNICORN_FORMAT, FormattedLine, check_format, compile_format
from supervisor.worker.exchange import Exchange, LineMaker, client_label, raw_target

__all__ = [
    "CACHED_TARGET",
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
TABLE_CAP = 1024  # distinct requests / clients kept per worker; then the table starts over
# Longer request targets are not kept: the table stays small whatever clients send.
CACHED_TARGET = 128
_json_str = msgspec.json.Encoder().encode  # a str -> its JSON form, quotes included
# Bytes that may not appear raw inside a JSON string (or are not ASCII).
_NOT_JSON_SAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def _json_inner(raw: bytes) -> bytes:
    """``raw`` as the inside of a JSON string; plain ASCII (most paths) is used as it is."""
    if _NOT_JSON_SAFE.search(raw) is None:
        return raw
    return _json_str(raw.decode("latin-1"))[1:-1]


def _kept(table: dict[Any, bytes], key: Any, value: bytes) -> bytes:
    """``value``, kept in ``table`` under ``key``; a full table starts over."""
    if len(table) > TABLE_CAP:
        table.clear()
    table[key] = value
    return value


# tenths of a millisecond -> "12.3ms\n": formatting a float is a third of a text line's cost.
_TENTHS = [b"%d.%dms\n" % divmod(tenths, 10) for tenths in range(1000)]
_MILLIS = [b"%03d" % millis for millis in range(1000)]  # a JSON timestamp's milliseconds


class DefaultLine:
    """``[time] [pid] [instance] [INFO] 127.0.0.1:5000 - "GET /x HTTP/1.1" 200 1.4ms``.

    The hot path of the default access log, three ready pieces joined: the
    time, pid and client part (made once per second and client), the request
    line and status (made once per distinct request, kept in a bounded table
    like :class:`JsonLine`'s), and the duration (from a table of tenths of a
    millisecond under 100 ms). Measured with callgrind: ~5.0k instructions a
    line against ~7.4k for one ``%`` over six values.
    """

    __slots__ = ("_clients", "_clock", "_head", "_middles", "_next", "_second", "_stamp")

    def __init__(self, instance: str = "") -> None:
        self._head = f"] [{os.getpid()}] " + (f"[{instance}] " if instance else "") + "[INFO] "
        self._clock = Clock()
        self._second = self._next = 0.0  # the stamp is good for _second <= now < _next
        self._stamp = ""
        self._clients: dict[str, bytes] = {}
        self._middles: dict[tuple[bytes, bytes, str, int], bytes] = {}

    def _prefix(self, client: str, now: float) -> bytes:
        if not self._second <= now < self._next:
            self._second = float(int(now))
            self._next = self._second + 1.0
            self._stamp = self._clock.text(now)
            self._clients.clear()
        made = f'[{self._stamp}{self._head}{client} - "'.encode("utf-8", "replace")
        return _kept(self._clients, client, made)

    def _middle(self, c: Exchange, key: tuple[bytes, bytes, str, int]) -> bytes:
        version = key[2]
        middle = b'%b %b HTTP/%b" %d ' % (
            c.method,
            c.target,
            _VERSIONS.get(version) or version.encode("latin-1"),
            c.status,
        )
        return _kept(self._middles, key, middle) if len(c.target) <= CACHED_TARGET else middle

    def __call__(self, c: Exchange) -> bytes:
        now = time.time()
        client = c.client_text
        prefix = self._clients.get(client) if self._second <= now < self._next else None
        key = (c.method, c.target, c.scope["http_version"], c.status)
        tenths = int(c.duration * 10000.0 + 0.5)  # inline: a call costs as much as the rest
        return (
            (prefix or self._prefix(client, now))
            + (self._middles.get(key) or self._middle(c, key))
            + (_TENTHS[tenths] if tenths < 1000 else b"%.1fms\n" % (c.duration * 1000))
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

    __slots__ = ("_clients", "_clock", "_custom", "_head", "_middles", "_pid", "_second", "_stamp")

    def __init__(self, instance: str, custom: FormattedLine | None = None) -> None:
        self._clock = Clock()
        self._custom = custom
        self._second = -1
        self._stamp = b""
        self._clients: dict[str, bytes] = {}
        self._middles: dict[tuple[bytes, bytes, bytes, int], bytes] = {}
        self._pid = str(os.getpid()).encode()
        self._head = (
            b'Z","level":"info","logger":"supervisor.access","pid":%b,"instance_id":%b,'
            % (
                self._pid,
                _json_str(instance),
            )
        )

    def _client(self, client: str) -> bytes:
        """``"client":...,"worker_pid":N,`` for one client."""
        made = b'"client":%b,"worker_pid":%b,' % (
            _json_str(client) if client != "-" else b"null",
            self._pid,
        )
        return _kept(self._clients, client, made)

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
        # A custom message can hold anything per request; a long target is not kept.
        if self._custom is None and len(raw_path) + len(query) <= CACHED_TARGET:
            return _kept(self._middles, key, middle)
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
            rid_json = b"null}\n"
        elif rid.isalnum():  # ours (hex) and most clients': nothing to escape
            rid_json = b'"' + rid + b'"}\n'
        else:
            rid_json = _json_str(rid.decode("latin-1")) + b"}\n"
        # Joined from ready pieces: one % over a 250-byte template scans all of it.
        return b"".join(
            (
                self._stamp,
                _MILLIS[int((now - second) * 1000)],
                self._head,
                self._clients.get(c.client_text) or self._client(c.client_text),
                middle,
                b'"duration_ms":%.3f,"bytes":%d,"request_id":' % (c.duration * 1000, c.sent),
                rid_json,
            )
        )
