"""Access lines: every gunicorn atom, the default text line, the JSON line (no processes)."""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from supervisor.errors import ConfigError
from supervisor.worker.access import (
    CACHED_TARGET,
    GUNICORN_FORMAT,
    TABLE_CAP,
    DefaultLine,
    FormattedLine,
    JsonLine,
    check_format,
    compile_format,
)


@dataclass
class Exchange:
    scope: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "http",
            "method": "POST",
            "path": "/items/ä b",
            "raw_path": b"/items/%C3%A4%20b",
            "query_string": b"q=1&x=%22",
            "http_version": "1.1",
            "client": ("10.1.2.3", 5123),
            "root_path": "",
            "scheme": "https",
            "headers": [
                (b"host", b"example.org"),
                (b"user-agent", b'curl/8 "quoted"'),
                (b"referer", b"http://ref.example/"),
                (b"authorization", b"Basic " + base64.b64encode(b"alice:secret")),
                (b"x-trace", b"first"),
                (b"x-trace", b"last"),
            ],
        }
    )
    status: int = 201
    sent: int = 1234
    duration: float = 1.2345678
    request_id: bytes | None = b"0123456789abcdef0123456789abcdef"
    response_headers: Any = field(
        default_factory=lambda: [(b"Content-Type", b"application/json"), (b"X-Id", b"7")]
    )
    target: bytes = b"/items/%C3%A4%20b?q=1&x=%22"
    method: bytes = b"POST"
    client_text: str = "10.1.2.3:5123"


def text(fmt: str, exchange: Exchange | None = None) -> str:
    return FormattedLine(fmt).text(exchange or Exchange())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "10.1.2.3"),
        ("l", "-"),
        ("u", "alice"),
        ("r", "POST /items/%C3%A4%20b?q=1&x=%22 HTTP/1.1"),
        ("s", "201"),
        ("m", "POST"),
        ("U", "/items/ä b"),
        ("q", "q=1&x=%22"),
        ("H", "HTTP/1.1"),
        ("b", "1234"),
        ("B", "1234"),
        ("f", "http://ref.example/"),
        ("a", 'curl/8 \\"quoted\\"'),
        ("T", "1"),
        ("D", "1234567"),
        ("M", "1234"),
        ("L", "1.234567"),
        ("p", "<PID>"),  # filled in by the test: ids must not vary between xdist workers
        ("{x-trace}i", "last"),
        ("{X-TRACE}i", "last"),
        ("{missing}i", "-"),
        ("{content-type}o", "application/json"),
        ("{x-id}o", "7"),
        ("{remote_addr}e", "10.1.2.3"),
        ("{request_method}e", "POST"),
        ("{raw_uri}e", "/items/%C3%A4%20b?q=1&x=%22"),
        ("{http_user_agent}e", 'curl/8 \\"quoted\\"'),
        ("{nothing}e", "-"),
    ],
)
def test_every_gunicorn_atom(atom: str, expected: str) -> None:
    assert text(f"%({atom})s") == expected.replace("PID", str(os.getpid()))


def test_time_atom_is_apache_common_log_format() -> None:
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", text("%(t)s"))


def test_gunicorn_default_format_and_conversions() -> None:
    line = text(GUNICORN_FORMAT)
    assert line.startswith("10.1.2.3 - alice [")
    assert line.endswith(
        '] "POST /items/%C3%A4%20b?q=1&x=%22 HTTP/1.1" 201 1234 '
        '"http://ref.example/" "curl/8 \\"quoted\\""'
    )
    assert text("%(D)d|%(s)5s|%(M)-6d|100%%") == "1234567|  201|1234  |100%"
    assert FormattedLine("%(s)s")(Exchange()) == b"201\n"  # type: ignore[arg-type]


def test_user_is_a_dash_without_basic_auth() -> None:
    exchange = Exchange()
    exchange.scope["headers"] = [(b"authorization", b"Bearer token")]
    assert text("%(u)s", exchange) == "-"
    exchange.scope["headers"] = [(b"authorization", b"Basic !!!not-base64")]
    assert text("%(u)s", exchange) == "-"


def test_response_headers_are_kept_only_when_the_format_uses_them() -> None:
    assert FormattedLine("%({x-id}o)s").uses_response_headers
    assert not FormattedLine(GUNICORN_FORMAT).uses_response_headers


@pytest.mark.parametrize(
    ("fmt", "problem"),
    [
        ("%(nope)s", "unknown atom %(nope)s"),
        ("%(h)s %s", "needs an atom name"),
        ("%(s)q", "not a valid % conversion"),
        ("%(s)*d", "not a valid % conversion"),
        ("%({x}z)s", "unknown atom"),
        ("%(r)d", "--access-log-format"),  # compiles, fails on a sample: still one error
    ],
)
def test_bad_formats_are_configuration_errors(fmt: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        check_format(fmt)


def test_compile_format_keeps_literals_and_percent_signs() -> None:
    template, values = compile_format('a %(s)s "b" %% c')
    assert template == 'a %s "b" %% c'
    assert values == ["c.status"]


def test_default_text_line() -> None:
    line = DefaultLine()(Exchange()).decode()  # type: ignore[arg-type]
    pattern = (
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[" + str(os.getpid()) + r"\] \[INFO\] "
        r'10\.1\.2\.3:5123 - "POST /items/%C3%A4%20b\?q=1&x=%22 HTTP/1\.1" 201 1234\.6ms\n'
    )
    assert re.fullmatch(pattern, line), line
    named = DefaultLine("pod-a")(Exchange()).decode()  # type: ignore[arg-type]
    assert f"[{os.getpid()}] [pod-a] [INFO]" in named


def test_default_text_lines_of_repeated_and_distinct_requests_each_say_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request line, the client and the duration come from tables: every line still
    says its own request, client, version, status and duration (rounded like %.1f), the
    time follows the clock (also backwards), and the tables stay bounded."""
    line = DefaultLine()
    now = [1_800_000_000.25]
    monkeypatch.setattr("supervisor.worker.access.time.time", lambda: now[0])

    def text(**changes: Any) -> str:
        exchange = Exchange()
        for name, value in changes.items():
            setattr(exchange, name, value)
        return line(exchange).decode()  # type: ignore[arg-type]

    tail = lambda made: made.split("[INFO] ", 1)[1]  # noqa: E731
    assert (
        tail(text()) == '10.1.2.3:5123 - "POST /items/%C3%A4%20b?q=1&x=%22 HTTP/1.1" 201 1234.6ms\n'
    )
    for duration, shown in [
        (0.0, "0.0"),
        (0.00004, "0.0"),
        (0.00006, "0.1"),
        (0.0123, "12.3"),
        (0.09994, "99.9"),
        (0.09996, "100.0"),
        (0.1, "100.0"),
        (12.5, "12500.0"),
    ]:
        assert tail(text(duration=duration)).endswith(f" 201 {shown}ms\n"), duration
    assert tail(text(status=404, duration=0.001)).endswith('HTTP/1.1" 404 1.0ms\n')
    exchange = Exchange()
    exchange.scope["http_version"] = "1.0"
    assert 'HTTP/1.0" 201' in line(exchange).decode()  # type: ignore[arg-type]
    assert tail(text(method=b"GET", target=b"/a")).startswith('10.1.2.3:5123 - "GET /a HTTP/1.1"')
    assert tail(text(client_text="-", target=b"/a")).startswith('- - "POST /a HTTP/1.1"')
    first = text()
    now[0] += 1.0
    later = text()
    now[0] -= 3600.0
    earlier = text()
    stamp = lambda made: made.split("]", 1)[0]  # noqa: E731
    assert len({stamp(first), stamp(later), stamp(earlier)}) == 3
    for n in range(3 * TABLE_CAP):
        target = b"/u/%d" % n
        assert f'"POST /u/{n} HTTP/1.1"' in text(target=target, client_text=f"10.0.0.1:{n}")
    assert len(line._middles) <= TABLE_CAP + 1 and len(line._clients) <= TABLE_CAP + 1
    long = b"/" + b"x" * CACHED_TARGET
    assert f'"POST {long.decode()} HTTP/1.1"' in text(target=long)
    assert (b"POST", long, "1.1", 201) not in line._middles


def test_json_line_is_valid_json_whatever_the_request_holds() -> None:
    exchange = Exchange()
    exchange.request_id = b'client "supplied"\\id'
    exchange.scope["path"] = 'we"ird\n\\path'
    exchange.scope["raw_path"] = b"we%22ird%0A%5Cpath"
    exchange.scope["query_string"] = b'a="b"\x01'
    record = json.loads(JsonLine('inst "1" 100%')(exchange))  # type: ignore[arg-type]
    assert record["path"] == 'we"ird\n\\path'
    assert record["query"] == 'a="b"\x01'
    assert record["request_id"] == 'client "supplied"\\id'
    assert record["instance_id"] == 'inst "1" 100%'
    assert record["message"] == 'POST we"ird\n\\path 201'
    assert record["status"] == 201 and record["bytes"] == 1234
    assert record["duration_ms"] == pytest.approx(1234.568, abs=0.001)
    assert record["client"] == "10.1.2.3:5123" and record["worker_pid"] == os.getpid()
    assert record["logger"] == "supervisor.access" and record["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])


def test_json_line_plain_request_and_custom_message() -> None:
    exchange = Exchange()
    exchange.scope.update(path="/plain", raw_path=b"/plain", query_string=b"")
    exchange.client_text = "-"
    exchange.request_id = None
    record = json.loads(JsonLine("i")(exchange))  # type: ignore[arg-type]
    assert (record["path"], record["query"], record["client"]) == ("/plain", "", None)
    assert record["request_id"] is None
    custom = JsonLine("i", FormattedLine('%(h)s "%(r)s" %(s)s'))(exchange)  # type: ignore[arg-type]
    assert (
        json.loads(custom)["message"] == '10.1.2.3 "POST /items/%C3%A4%20b?q=1&x=%22 HTTP/1.1" 201'
    )


def test_json_lines_of_repeated_and_distinct_requests_each_say_their_own() -> None:
    """The per-request part is kept per distinct request: a repeat, another status, another
    query or path each give their own line, and a flood of distinct paths stays bounded."""
    line = JsonLine("i")
    seen = []
    for path, query, status, sent in [
        ("/a", b"", 200, 1),
        ("/a", b"", 200, 2),
        ("/a", b"", 404, 3),
        ("/a", b"x=1", 200, 4),
        ("/b", b"x=1", 200, 5),
    ]:
        exchange = Exchange()
        exchange.scope.update(path=path, raw_path=path.encode(), query_string=query)
        exchange.status, exchange.sent = status, sent
        record = json.loads(line(exchange))  # type: ignore[arg-type]
        seen.append((record["path"], record["query"], record["status"], record["bytes"]))
        assert record["message"] == f"POST {path} {status}"
    assert seen == [
        ("/a", "", 200, 1),
        ("/a", "", 200, 2),
        ("/a", "", 404, 3),
        ("/a", "x=1", 200, 4),
        ("/b", "x=1", 200, 5),
    ]
    for n in range(3 * TABLE_CAP):
        exchange = Exchange()
        exchange.scope.update(path=f"/u/{n}", raw_path=b"/u/%d" % n, query_string=b"")
        assert json.loads(line(exchange))["path"] == f"/u/{n}"  # type: ignore[arg-type]
    assert len(line._middles) <= TABLE_CAP + 1


def test_a_format_that_fails_on_some_request_still_gives_a_line() -> None:
    exchange = Exchange()
    exchange.duration = 2000.0  # %(D)c of 2e9 is no character
    line = FormattedLine("%(s)s %(D)c")(exchange)  # type: ignore[arg-type]
    assert b"--access-log-format failed" in line
    assert line.endswith(b"\n") and b"/items/" in line
