"""The worker's own HTTP/1.1 request cycle behaves as uvicorn's, over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, wait_for


def exchange(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.fixture
def sup(start_supervisor: StartSupervisor) -> SupervisorProcess:
    process = start_supervisor("tests.apps.hello:app", "--timeout-keep-alive", "1")
    process.wait_serving(1)
    return process


def test_pipelined_requests_are_answered_in_order(sup: SupervisorProcess) -> None:
    request = b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n"
    request += b"GET /env?name=HOME HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(sup.port, request + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    first, _, third = answer.split(b"HTTP/1.1 200 OK")[1:]
    assert b"content-length" in first and b"connection: close" in third


def test_head_204_and_chunked_streams_keep_their_framing(sup: SupervisorProcess) -> None:
    head = exchange(sup.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert b"content-length: " in head  # the app's own header, no body after it
    stream = exchange(sup.port, b"GET /stream?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in stream
    assert stream.endswith(b"2\r\n0\n\r\n2\r\n1\n\r\n2\r\n2\n\r\n0\r\n\r\n")


def test_idle_keep_alive_connections_close_after_the_timeout_not_before(
    sup: SupervisorProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", sup.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        time.sleep(0.8)  # still open just before the timeout: a reuse now is answered
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert sock.recv(65536) == b"", "closed by the server"
        idle = time.monotonic() - started
    assert 1.0 <= idle < 3.0, idle


def test_default_headers_are_sent_with_every_response(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--instance-id", "pod-7")
    sup.wait_serving(1)
    response = httpx.get(sup.url + "/", timeout=5)
    assert response.headers["x-instance-id"] == "pod-7" and response.headers["server"] == "uvicorn"
    assert "date" in response.headers


def test_proxy_headers_from_a_trusted_peer_only(start_supervisor: StartSupervisor) -> None:
    trusted = start_supervisor("tests.apps.hello:app", "--log-format", "json")
    untrusted = start_supervisor(
        "tests.apps.hello:app", "--log-format", "json", "--forwarded-allow-ips", "10.9.9.9"
    )
    trusted.wait_serving(1)
    untrusted.wait_serving(1)
    headers = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "https"}
    for process in (trusted, untrusted):
        assert httpx.get(process.url + "/fwd", headers=headers, timeout=5).status_code == 200

    def client_of(process: SupervisorProcess) -> str | None:
        for line in process.log().splitlines():
            data = json.loads(line)
            if data.get("path") == "/fwd":
                return str(data["client"])
        return None

    assert wait_for(lambda: client_of(trusted), 5).startswith("203.0.113.7:")
    assert wait_for(lambda: client_of(untrusted), 5).startswith("127.0.0.1:")


def test_max_concurrent_counts_in_flight_requests(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("tests.apps.hello:app", "--max-concurrent", "1")
    sup.wait_serving(1)
    with (
        httpx.Client(base_url=sup.url, timeout=10) as slow,
        httpx.Client(base_url=sup.url, timeout=10) as other,
    ):
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(slow.get("/sleep?s=1").status_code))
        thread.start()
        time.sleep(0.3)
        busy = other.get("/")
        health = other.get("/health")
        thread.join()
    assert result == [200]
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["message"] == "Too many concurrent requests"
    assert health.status_code == 200
