"""Long-lived connections through a rolling restart, with real clients and a real app.

A FastAPI app (tests/apps/frameworks/longlived_app.py, behind a pure ASGI
middleware) under the real supervisor; clients are the ``websockets``
package and httpx streaming. On SIGHUP a draining worker keeps its
WebSockets and streams for the drain window (``--timeout-graceful``), tells
the app at once (the drain notice), and at the window's end closes what is
left with 1012 (WebSockets) or a complete chunked body (streams). New
connections meanwhile go to the new workers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import StartSupervisor
from tests.supervisor_process import SupervisorProcess, free_port, status_json, wait_for

APP = "tests.apps.frameworks.longlived_app:asgi"
FAREWELL_APP = "tests.apps.frameworks.sse_farewell_app:app"
BOOT_TIMEOUT = 30.0
WINDOW = 3.0  # --timeout-graceful in these tests: short, and long enough to see
PING_EVERY = 0.1
ROLL_SLACK = 4.0  # SIGHUP -> an old worker starts draining (boot of its replacement)
pytestmark = pytest.mark.timeout(90)


def start(start_supervisor: StartSupervisor, *args: str, workers: int = 2) -> SupervisorProcess:
    sup = start_supervisor(APP, "-w", str(workers), "--timeout-graceful", str(WINDOW), *args)
    sup.wait_serving(workers, timeout=BOOT_TIMEOUT)
    return sup


def ws_url(sup: SupervisorProcess, path: str) -> str:
    return f"ws://127.0.0.1:{sup.port}{path}"


@dataclass
class Pinger:
    """One WebSocket client pinging every 100 ms until the server closes it."""

    pongs: int = 0
    pids: set[int] = field(default_factory=set)
    last_pong: float = 0.0
    closed_at: float = 0.0
    code: int | None = None  # None: still open; 1006: no close frame
    reason: str = ""
    notices: list[str] = field(default_factory=list)

    async def run(
        self, url: str, opened: asyncio.Event | None = None, stop: asyncio.Event | None = None
    ) -> None:
        # Ended by the server's close, or by ``stop`` (a closing handshake of its own):
        # cancelling a websockets client in the middle of a recv can leave it waiting.
        async with websockets.connect(url, open_timeout=10, close_timeout=2) as ws:
            if opened is not None:
                opened.set()
            try:
                while stop is None or not stop.is_set():
                    await ws.send("ping")
                    while True:  # a drain notice may come before the pong
                        message = str(await asyncio.wait_for(ws.recv(), 5))
                        if message.startswith("pong"):
                            break
                        self.notices.append(message)
                    self.pongs += 1
                    self.pids.add(int(message.split()[1]))
                    self.last_pong = time.monotonic()
                    await asyncio.sleep(PING_EVERY)
            except websockets.ConnectionClosed as closed:
                self.closed_at = time.monotonic()
                self.code = closed.rcvd.code if closed.rcvd is not None else 1006
                self.reason = closed.rcvd.reason if closed.rcvd is not None else ""


async def stop_all(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Clients still open close themselves; a bounded wait, then cancel what is left."""
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=10) if tasks else (set(), set())
    for task in pending:
        task.cancel()


async def wait_all(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    assert not pending, f"{len(pending)} client(s) still open after {timeout}s"
    for task in done:
        task.result()  # a client that failed otherwise than by a close fails the test


def draining(sup: SupervisorProcess, pids: set[int]) -> bool:
    """Every one of ``pids`` has closed its listeners (its own "draining" line)."""
    log = sup.log()
    return all(f"Worker {pid} draining:" in log for pid in pids)


def stopped_lines(sup: SupervisorProcess, pids: set[int]) -> dict[int, str]:
    found = {}
    for line in sup.log().splitlines():
        match = re.search(r"Worker (\d+) stopped", line)
        if match and int(match.group(1)) in pids:
            found[int(match.group(1))] = line
    return found


def test_websockets_stay_open_through_a_roll_until_the_window_ends(
    start_supervisor: StartSupervisor,
) -> None:
    """20 clients pinging every 100 ms through a SIGHUP: every one keeps getting pongs
    until the drain window ends, then a 1012 close with a reason; none is reset, new
    connections go to the new workers, and the roll ends within the window."""
    sup = start(start_supervisor)
    old = sup.serving_pids()

    async def scenario() -> tuple[list[Pinger], float, Pinger]:
        clients = [Pinger() for _ in range(20)]
        tasks = [asyncio.ensure_future(c.run(ws_url(sup, "/ws"))) for c in clients]
        try:
            await asyncio.sleep(1.0)
            assert all(c.pongs > 0 for c in clients), "every client pings before the roll"
            hup = time.monotonic()
            sup.signal(signal.SIGHUP)
            await asyncio.to_thread(wait_for, lambda: draining(sup, old), 20.0, "old drain")
            late, late_stop = Pinger(), asyncio.Event()  # connects while the old ones drain
            late_task = asyncio.ensure_future(late.run(ws_url(sup, "/ws"), stop=late_stop))
            await wait_all(tasks, WINDOW + ROLL_SLACK + 5)
            await stop_all([late_task], late_stop)
            return clients, hup, late
        finally:
            for task in tasks:
                task.cancel()

    clients, hup, late = asyncio.run(scenario())
    codes = sorted({(c.code, c.reason) for c in clients})
    assert codes == [(1012, "server restarting")], codes
    for client in clients:
        assert client.pids <= old
        assert client.closed_at - hup >= WINDOW, "closed before the drain window ended"
        assert client.closed_at - client.last_pong < 0.5, "pongs until the close"
        assert client.closed_at - hup <= WINDOW + ROLL_SLACK + 2
    assert late.pongs > 0 and late.pids and not late.pids & old, "new connections: new workers"
    assert late.code is None, "the new worker's WebSocket is not closed"
    lines = wait_for(lambda: (s := stopped_lines(sup, old)) and len(s) == 2 and s, 10.0, "stopped")
    for line in lines.values():
        assert "exited with code 0" in line, line
    assert sum(int(re.findall(r"(\d+) websockets\)", line)[0]) for line in lines.values()) == 20


def test_the_drain_notice_reaches_the_app_through_its_middleware(
    start_supervisor: StartSupervisor,
) -> None:
    """HTTP and WebSocket scopes carry the notice; a WebSocket handler awaiting it hears
    of the drain at once, and keeps working until the window ends."""
    sup = start(start_supervisor, workers=1)
    before = sup.get("/notice", headers={"Connection": "close"}).json()
    assert before["in_scope"] is True and before["draining"] is False

    async def scenario() -> tuple[Pinger, float, float]:
        client = Pinger()
        task = asyncio.ensure_future(client.run(ws_url(sup, "/ws/notice")))
        await asyncio.sleep(0.5)
        hup = time.monotonic()
        sup.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_for, lambda: client.notices, ROLL_SLACK + 2, "a notice")
        told = time.monotonic()
        await wait_all([task], WINDOW + ROLL_SLACK + 5)
        return client, hup, told

    client, _, told = asyncio.run(scenario())
    assert len(client.notices) == 1 and client.notices[0].startswith("draining ")
    assert WINDOW - 0.5 <= float(client.notices[0].split()[1]) <= WINDOW  # seconds left
    assert client.last_pong - told >= WINDOW - 0.7, "pongs after the notice, to the end"
    assert (client.code, client.reason) == (1012, "server restarting")


def test_an_app_that_awaits_the_notice_closes_its_websockets_its_own_way(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start(start_supervisor, workers=1)

    async def scenario() -> tuple[list[Pinger], float]:
        clients = [Pinger() for _ in range(5)]
        tasks = [asyncio.ensure_future(c.run(ws_url(sup, "/ws/app-close"))) for c in clients]
        await asyncio.sleep(0.5)
        hup = time.monotonic()
        sup.signal(signal.SIGHUP)
        await wait_all(tasks, ROLL_SLACK + 2)
        return clients, hup

    clients, hup = asyncio.run(scenario())
    assert {(c.code, c.reason) for c in clients} == {(4000, "moving")}
    assert all(c.closed_at - hup < WINDOW for c in clients), "closed by the app, not the deadline"


def _read_stream(url: str) -> tuple[str, float]:
    with httpx.stream("GET", url, timeout=30, headers={"Connection": "close"}) as response:
        assert response.status_code == 200
        body = "".join(response.iter_text())  # raises on a truncated chunked body
    return body, time.monotonic()


@pytest.mark.parametrize("path", ["/stream", "/sse"])
def test_streams_started_before_a_roll_run_to_their_end(
    start_supervisor: StartSupervisor, path: str
) -> None:
    """A plain StreamingResponse and sse-starlette's EventSourceResponse (which stops when
    uvicorn's exit flag is set) both run to completion on a draining worker."""
    sup = start(start_supervisor, workers=1)

    async def scenario() -> str:
        reading = asyncio.ensure_future(
            asyncio.to_thread(_read_stream, f"{sup.url}{path}?seconds=2")
        )
        await asyncio.sleep(0.5)
        sup.signal(signal.SIGHUP)
        body, _ = await asyncio.wait_for(reading, 15)
        return body

    body = asyncio.run(scenario())
    if path == "/sse":
        assert body.count("event: tick") == 20 and "event: end" in body, body
    else:
        assert body.count("line ") == 20 and body.endswith("end\n"), body


def test_sse_starlette_streams_end_early_with_the_documented_recipe(
    start_supervisor: StartSupervisor,
) -> None:
    """docs/draining.md: the drain notice sets sse-starlette's AppStatus.should_exit in the
    lifespan; the stream's generator sees its shutdown_event and says goodbye itself."""
    sup = start_supervisor(FAREWELL_APP, "-w", "1", "--timeout-graceful", str(WINDOW))
    sup.wait_serving(1, timeout=BOOT_TIMEOUT)

    async def scenario() -> tuple[str, float, float]:
        reading = asyncio.ensure_future(
            asyncio.to_thread(_read_stream, f"{sup.url}/sse?seconds=30")
        )
        await asyncio.sleep(0.5)
        hup = time.monotonic()
        sup.signal(signal.SIGHUP)
        body, ended = await asyncio.wait_for(reading, WINDOW + ROLL_SLACK + 5)
        return body, hup, ended

    body, hup, ended = asyncio.run(scenario())
    assert "event: reconnect" in body and "retry: 1000" in body, body[-300:]
    assert ended - hup < WINDOW, "ended by the app on the notice, not by the deadline"


ZTTP = pytest.mark.skipif(importlib.util.find_spec("zttp") is None, reason="zttp not installed")


@pytest.mark.parametrize(
    ("path", "http"),
    [
        ("/stream", "httptools"),
        ("/sse", "httptools"),
        ("/stream", "h11"),
        pytest.param("/stream", "zttp", marks=ZTTP),
    ],
)
def test_a_stream_longer_than_the_window_ends_with_a_complete_body(
    start_supervisor: StartSupervisor, path: str, http: str
) -> None:
    """At the window's end the client gets the last chunk: a complete, shorter body."""
    sup = start(start_supervisor, "--http", http, workers=1)

    async def scenario() -> tuple[str, float, float]:
        reading = asyncio.ensure_future(
            asyncio.to_thread(_read_stream, f"{sup.url}{path}?seconds=30")
        )
        await asyncio.sleep(0.5)
        hup = time.monotonic()
        sup.signal(signal.SIGHUP)
        body, ended = await asyncio.wait_for(reading, WINDOW + ROLL_SLACK + 5)
        return body, hup, ended

    body, hup, ended = asyncio.run(scenario())
    assert WINDOW <= ended - hup <= WINDOW + ROLL_SLACK + 2
    ticks = body.count("event: tick") if path == "/sse" else body.count("line ")
    assert ticks >= (WINDOW + 0.5) / 0.1 * 0.8, f"the stream went on during the window: {ticks}"
    assert "end\n" not in body and "event: end" not in body, "cut before its natural end"
    wait_for(lambda: "ended 1 stream(s)" in sup.log(), 5.0, "the worker says it ended it")


def test_websockets_count_as_in_flight_and_show_in_status_and_metrics(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    """--max-concurrent 3 with 2 WebSockets and a stream open: the next request gets the 503;
    status and metrics show them, by worker state."""
    pid_file = tmp_path / "sup.pid"
    metrics_port = free_port()
    sup = start(
        start_supervisor,
        "--max-concurrent",
        "3",
        "--pid",
        str(pid_file),
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        workers=1,
    )

    def counted() -> dict[str, Any] | None:
        data = status_json("--pid", str(pid_file))
        totals = data["totals"]
        return data if (totals["websockets"], totals["streams"]) == (2, 1) else None

    async def scenario() -> tuple[int, int, dict[str, Any], str]:
        clients = [Pinger() for _ in range(2)]
        opened = [asyncio.Event() for _ in clients]
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(c.run(ws_url(sup, "/ws"), o, stop))
            for c, o in zip(clients, opened, strict=True)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)
            client = httpx.AsyncClient(base_url=sup.url, timeout=10)
            async with client, client.stream("GET", "/stream?seconds=10") as streaming:
                assert streaming.status_code == 200
                over = (await client.get("/notice")).status_code
                health = (await client.get("/health")).status_code
                data = await asyncio.to_thread(wait_for, counted, 5, "status counts", 0.2)
                metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        finally:
            await stop_all(tasks, stop)
        return over, health, data, metrics

    over, health, data, metrics = asyncio.run(scenario())
    assert over == 503, "two WebSockets and a stream fill --max-concurrent 3"
    assert health != 503, "the health path bypasses the limit"
    (worker,) = data["workers"]
    assert (worker["websockets"], worker["streams"]) == (2, 1)
    assert worker["in_flight"] >= 3
    assert re.search(r'supervisor_open_websockets\{[^}]*state="serving"\} 2\b', metrics), metrics
    assert re.search(r'supervisor_open_streams\{[^}]*state="serving"\} 1\b', metrics), metrics
    assert re.search(r'supervisor_open_websockets\{[^}]*state="draining"\} 0\b', metrics)


@dataclass
class Reconnecting:
    """A client that pings every 100 ms and reconnects whenever the server closes it."""

    sessions: list[Pinger] = field(default_factory=list)

    async def run(self, url: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            session = Pinger()
            self.sessions.append(session)
            await session.run(url, stop=stop)


def _keep_alive_load(url: str, stop: threading.Event, failures: list[str]) -> int:
    sent = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                response = client.get("/notice")
                if response.status_code != 200:
                    failures.append(str(response.status_code))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            sent += 1
    return sent


@pytest.mark.slow
def test_two_rolls_under_keep_alive_load_close_nothing_abnormally(
    start_supervisor: StartSupervisor,
) -> None:
    """40 reconnecting WebSocket clients and keep-alive HTTP load through 2 SIGHUPs: every
    close is a 1012 after the window, every session gets pongs until it closes, and no
    HTTP request fails."""
    sup = start(start_supervisor)
    old = sup.serving_pids()

    async def scenario() -> tuple[list[Reconnecting], float, list[str], int]:
        stop, stop_load = asyncio.Event(), threading.Event()
        failures: list[str] = []
        clients = [Reconnecting() for _ in range(40)]
        tasks = [asyncio.ensure_future(c.run(ws_url(sup, "/ws"), stop)) for c in clients]
        load = asyncio.ensure_future(
            asyncio.to_thread(_keep_alive_load, sup.url, stop_load, failures)
        )
        try:
            await asyncio.sleep(1.0)
            first = time.monotonic()
            sup.signal(signal.SIGHUP)
            await asyncio.sleep(WINDOW / 2)
            sup.signal(signal.SIGHUP)  # while the first roll's workers still drain
            await asyncio.to_thread(
                wait_for, lambda: len(stopped_lines(sup, old)) == 2, 40.0, "old workers gone"
            )
            await asyncio.sleep(0.5)
            stop.set()
        finally:
            stop_load.set()
            sent = await load
            await stop_all(tasks, stop)
        return clients, first, failures, sent

    clients, first, failures, sent = asyncio.run(scenario())
    assert failures == [] and sent > 50, (failures[:5], sent)
    closed = [s for c in clients for s in c.sessions if s.code is not None]
    assert len(closed) >= 40, "every first session is closed by a drain"
    assert {(s.code, s.reason) for s in closed} == {(1012, "server restarting")}
    for session in closed:
        assert session.closed_at - first >= WINDOW, "a close before the window ended"
        assert session.closed_at - session.last_pong < 0.5, "pongs until the close"


def test_a_stop_keeps_websockets_for_the_window_and_exits_0(
    start_supervisor: StartSupervisor,
) -> None:
    """SIGTERM drains every worker at once: WebSockets keep working for the window, get
    1012 at its end, and a drain that closed them properly is a clean exit."""
    sup = start(start_supervisor)

    async def scenario() -> tuple[list[Pinger], float]:
        clients = [Pinger() for _ in range(6)]
        tasks = [asyncio.ensure_future(c.run(ws_url(sup, "/ws"))) for c in clients]
        await asyncio.sleep(1.0)
        term = time.monotonic()
        sup.signal(signal.SIGTERM)
        await wait_all(tasks, WINDOW + 5)
        return clients, term

    clients, term = asyncio.run(scenario())
    assert {(c.code, c.reason) for c in clients} == {(1012, "server restarting")}
    assert all(WINDOW <= c.closed_at - term <= WINDOW + 2 for c in clients)
    assert all(c.closed_at - c.last_pong < 0.5 for c in clients)
    assert sup.wait_exit(15) == 0, sup.log()
