"""HTTP/2 through uvicorn's zttp protocol (issue 17): ``--http zttp --http2`` serves h2 over
TLS (ALPN) and cleartext h2c (prior knowledge) beside HTTP/1.1 on the same port, with our
access lines and counters; a drain lets an HTTP/2 request in flight complete and ends the
connection with GOAWAY before closing it."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, free_port, wait_for

pytest.importorskip("zttp")
pytest.importorskip("h2")
trustme = pytest.importorskip("trustme")

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

APP = "tests.apps.hello:app"
H2 = ("--http", "zttp", "--http2")


def issue(directory: Path) -> tuple[Any, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = directory / "server.pem", directory / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, str(certfile), str(keyfile)


def access_lines(sup: SupervisorProcess, token: str) -> list[str]:
    return [line for line in sup.log().splitlines() if token in line and '"GET ' in line]


def metric(port: int, name: str, **labels: str) -> float:
    """The sample of ``name`` whose labels include ``labels`` (instance_id is always there)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for found in re.finditer(re.escape(name) + r"\{([^}]*)\} (\S+)\n", text):
        if all(f'{k}="{v}"' in found.group(1).split(",") for k, v in labels.items()):
            return float(found.group(2))
    return 0.0


def test_h2_over_tls_by_alpn_and_http1_on_the_same_port(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    ca, certfile, keyfile = issue(tmp_path)
    metrics = free_port()
    sup = start_supervisor(
        APP, "-w", "2", *H2, "--ssl-certfile", certfile, "--ssl-keyfile", keyfile,
        "--metrics-bind", f"127.0.0.1:{metrics}",
    )  # fmt: skip
    workers = sup.wait_serving(2)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://127.0.0.1:{sup.port}"
    with httpx.Client(verify=context, http2=True, timeout=10) as client:
        answers = [client.get(f"{url}/?h2tls={i}") for i in range(20)]
    assert {r.http_version for r in answers} == {"HTTP/2"}
    assert {r.status_code for r in answers} == {200}
    assert {int(r.text) for r in answers} <= workers
    with httpx.Client(verify=context, timeout=10) as client:  # HTTP/1.1 only: ALPN says so
        plain = client.get(f"{url}/?h1tls=1")
    assert plain.http_version == "HTTP/1.1" and plain.status_code == 200
    # One access line each, ours (not uvicorn's beside it), saying HTTP/2.
    wait_for(lambda: len(access_lines(sup, "h2tls=")) >= 20, 5, message=sup.log())
    h2_lines = access_lines(sup, "h2tls=")
    assert len(h2_lines) == 20, "\n".join(h2_lines)
    assert all("HTTP/2" in line and " 200 " in line for line in h2_lines), h2_lines
    # The line is written at the end of the worker's loop turn, after the response left.
    wait_for(lambda: access_lines(sup, "h1tls="), 5, message=sup.log())
    assert len(access_lines(sup, "h1tls=")) == 1
    # The counters saw them all (heartbeats carry them once a second).
    wait_for(lambda: metric(metrics, "supervisor_responses_total", status="2xx") >= 21, 10)
    assert metric(metrics, "supervisor_requests_total") >= 21
    assert "Traceback" not in sup.log()


def test_h2c_by_prior_knowledge_and_http1_in_cleartext(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(APP, "-w", "1", *H2)
    (worker,) = sup.wait_serving(1)
    with httpx.Client(http1=False, http2=True, timeout=10) as client:  # prior knowledge
        answers = [client.get(f"{sup.url}/?h2c={i}") for i in range(5)]
    assert {r.http_version for r in answers} == {"HTTP/2"}
    assert {r.text for r in answers} == {str(worker)}
    assert httpx.get(f"{sup.url}/?h1c=1", timeout=10).http_version == "HTTP/1.1"
    wait_for(lambda: len(access_lines(sup, "h2c=")) >= 5, 5, message=sup.log())
    assert all("HTTP/2" in line for line in access_lines(sup, "h2c="))


def test_without_http2_an_h2c_preface_is_not_served_as_http2(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(APP, "-w", "1", "--http", "zttp")  # zttp's HTTP/1.1 only
    sup.wait_serving(1)
    assert httpx.get(f"{sup.url}/", timeout=10).http_version == "HTTP/1.1"
    with pytest.raises(httpx.HTTPError), httpx.Client(http1=False, http2=True) as client:
        client.get(f"{sup.url}/", timeout=5)


class RawH2:
    """An h2c client that records every HTTP/2 event it receives, in order, with times."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.port = port
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.lock = threading.Lock()
        self.events: list[tuple[float, Any]] = []
        self.closed_at: float | None = None
        self.flush()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def get(self, path: str) -> int:
        with self.lock:
            stream = self.conn.get_next_available_stream_id()
            headers = [
                (":method", "GET"),
                (":path", path),
                (":scheme", "http"),
                (":authority", f"127.0.0.1:{self.port}"),
            ]
            self.conn.send_headers(stream, headers, end_stream=True)
            self.flush()
        return stream

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed_at = time.monotonic()
                return
            with self.lock:
                for event in self.conn.receive_data(data):
                    self.events.append((time.monotonic(), event))
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                with_suppressed = self.conn.data_to_send()
                if with_suppressed:
                    with contextlib.suppress(OSError):
                        self.sock.sendall(with_suppressed)

    def of(self, kind: type, stream: int | None = None) -> list[tuple[float, Any]]:
        with self.lock:
            return [
                (t, e)
                for t, e in self.events
                if isinstance(e, kind) and (stream is None or e.stream_id == stream)
            ]

    def status(self, stream: int) -> str | None:
        for _, event in self.of(h2.events.ResponseReceived, stream):
            return dict(event.headers).get(":status")
        return None

    def body(self, stream: int) -> bytes:
        return b"".join(e.data for _, e in self.of(h2.events.DataReceived, stream))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["hup", "term"])
def test_a_drain_completes_the_http2_requests_in_flight_then_goaway_then_close(
    start_supervisor: StartSupervisor, tmp_path: Path, sig: signal.Signals
) -> None:
    sup = start_supervisor(APP, "-w", "1", *H2, "--timeout-graceful", "10")
    (worker,) = sup.wait_serving(1)
    client = RawH2(sup.port)
    try:
        mark = tmp_path / "in-flight"
        first = client.get(f"/sleep?s=2&mark={mark}")
        wait_for(mark.exists, 10, "the HTTP/2 request in flight")
        sup.signal(sig)
        wait_for(lambda: "draining" in sup.log(), 10, message=sup.log())
        second = client.get("/sleep?s=0.5")  # a new stream on the draining connection
        wait_for(lambda: client.closed_at is not None, 20, message=f"closed\n{sup.log()}")
        for stream in (first, second):  # both served in full, neither refused with 503
            assert client.status(stream) == "200", (stream, client.events, sup.log())
            assert client.body(stream) == str(worker).encode()
            assert client.of(h2.events.StreamEnded, stream), f"stream {stream} not ended"
        goaway = client.of(h2.events.ConnectionTerminated)
        assert goaway, f"no GOAWAY before the close\n{sup.log()}"
        (sent_at, frame) = goaway[0]
        assert frame.error_code == 0 and frame.last_stream_id == second  # NO_ERROR, all served
        last_end = max(t for t, _ in client.of(h2.events.StreamEnded))
        assert client.closed_at is not None and last_end <= sent_at <= client.closed_at
    finally:
        client.close()
    if sig is signal.SIGHUP:
        assert len(sup.wait_serving(1, timeout=20)) == 1


def test_httpx_over_http2_loses_no_request_across_a_sighup(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(APP, "-w", "2", *H2, "--timeout-graceful", "10")
    old = sup.wait_serving(2)
    failures: list[str] = []
    served: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(http1=False, http2=True, timeout=20) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{sup.url}/sleep?s=0.05")
                    assert response.http_version == "HTTP/2"
                    served.append(int(response.text))
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(served) > 30, 10)
    sup.signal(signal.SIGHUP)
    wait_for(lambda: sup.serving_pids().isdisjoint(old) and len(sup.serving_pids()) == 2, 30)
    count = len(served)
    wait_for(lambda: len(served) > count + 30, 10)
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == [], (failures[:5], sup.log())
    assert set(served) & old and set(served) - old
