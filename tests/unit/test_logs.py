"""Log formats and the line sink: records never lost, lines never torn (no processes)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.logs import sink as sink_module
from supervisor.logs.formats import JsonFormatter, TextFormatter
from supervisor.logs.sink import PIPE_BUF, LineSink


def record(
    msg: str = "hello %s", args: tuple[object, ...] = ("you",), **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord("app.views", logging.WARNING, __file__, 10, msg, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


class Request:
    def __repr__(self) -> str:
        return "<Request GET /x>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_json_never_loses_a_record_whatever_extra_holds() -> None:
    formatter = JsonFormatter("pod-1")
    line = formatter.format(
        record(
            request=Request(), status_code=404, weird={1: object(), "k": {2, 3}}, bad=BrokenRepr()
        )
    )
    data = json.loads(line)
    assert data["message"] == "hello you" and data["logger"] == "app.views"
    assert data["request"] == "<Request GET /x>" and data["status_code"] == 404
    assert data["bad"] == "<unrepresentable BrokenRepr>"
    assert data["instance_id"] == "pod-1" and data["level"] == "warning"
    assert "\n" not in line


def test_json_keeps_a_record_whose_arguments_do_not_fit_its_template() -> None:
    data = json.loads(JsonFormatter().format(record("count %d", ("x",))))
    assert data["message"] == "'count %d' % ('x',)"
    assert "count %d" in TextFormatter().format(record("count %d", ("x",)))


def test_json_exception_and_stack_are_fields() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        made = record()
        made.exc_info = sys.exc_info()
    made.stack_info = "Stack (most recent call last):\n  here"
    data = json.loads(JsonFormatter().format(made))
    assert "ValueError: bad value" in data["exception"]
    assert "here" in data["stack"]


def test_text_line_has_the_pid_in_a_fixed_place_and_a_chosen_instance() -> None:
    line = TextFormatter("pod-1").format(record())
    assert f"] [{os.getpid()}] [pod-1] [WARNING] hello you" in line
    assert "[pod-1]" not in TextFormatter().format(record())
    assert "100%" in TextFormatter("100%").format(record())  # no format-string injection


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_pipe_gets_a_private_non_blocking_description(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    sink = LineSink.for_fd(write_end)
    assert fcntl.fcntl(sink.fd, fcntl.F_GETFL) & os.O_NONBLOCK
    assert not fcntl.fcntl(write_end, fcntl.F_GETFL) & os.O_NONBLOCK  # the shared one is untouched
    sink.write_now(b"one\n")
    assert drain(read_end) == b"one\n"
    sink.close()


def test_batches_are_cut_at_line_ends_into_atomic_pipe_writes(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = pipe
    sink = LineSink.for_fd(write_end)
    chunks: list[bytes] = []
    real_write = sink._write

    def spy(data: bytes | bytearray) -> int:
        chunks.append(bytes(data))
        return real_write(data)

    monkeypatch.setattr(sink, "_write", spy)
    lines = [b"line %04d " % i + b"x" * 90 + b"\n" for i in range(120)]
    sink.queued.extend(lines)
    sink.flush()
    assert b"".join(chunks) == b"".join(lines) == drain(read_end)
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in chunks)
    sink.close()


def test_a_stalled_reader_gets_backpressure_not_loss(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "STALL_BEAT", 0.05)
    read_end, write_end = pipe
    sink = LineSink.for_fd(write_end)
    sink.stall_note = lambda: b"NOTE stalled\n"
    beats: list[float] = []
    sink.on_stall = lambda: beats.append(time.monotonic())
    payload = [b"%06d " % i + b"y" * 100 + b"\n" for i in range(6000)]  # ~650 KB
    received: list[bytes] = []

    def slow_reader() -> None:
        time.sleep(0.5)  # the reader is away for a while, then reads slowly
        while True:
            ready, _, _ = select.select([read_end], [], [], 2)
            if not ready:
                return
            chunk = os.read(read_end, 32768)
            if not chunk:
                return
            received.append(chunk)
            time.sleep(0.01)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    started = time.monotonic()
    for start in range(0, len(payload), 100):
        sink.queued.extend(payload[start : start + 100])
        sink.flush()  # no event loop: each flush waits until the reader has taken it
    assert time.monotonic() - started > 0.4, "the writer waited for the reader"
    reader.join(30)
    data = b"".join(received)
    assert data.replace(b"NOTE stalled\n", b"") == b"".join(payload)
    assert data.count(b"NOTE stalled\n") == 1
    assert sink.stalls >= 1 and sink.stalled_seconds > 0.3 and len(beats) >= 3
    sink.close()


def test_a_failing_descriptor_is_reported_once_and_recovers(pipe: tuple[int, int]) -> None:
    report_read, report_write = pipe
    sink = LineSink(os.open(os.devnull, os.O_WRONLY), name="app.log", report_fd=report_write)
    failing = [True]
    real_write = sink._write

    def flaky(data: bytes | bytearray) -> int:
        if failing[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(data)

    sink._write = flaky  # type: ignore[method-assign]
    for _ in range(5):
        sink.write_now(b"lost line\n")
    failing[0] = False
    sink.write_now(b"back\n")
    reports = drain(report_read).decode()
    assert reports.count("Cannot write to log file app.log (No space left on device)") == 1
    assert "is writable again (5 line(s) were lost)" in reports
    sink.close()


def test_reopen_keeps_the_descriptor_number(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = LineSink.for_path(str(path))
    fd = sink.fd
    sink.write_now(b"before\n")
    path.rename(tmp_path / "app.log.1")
    sink.reopen()
    sink.write_now(b"after\n")
    assert sink.fd == fd
    assert (tmp_path / "app.log.1").read_bytes() == b"before\n"
    assert path.read_bytes() == b"after\n"
    sink.close()


def test_a_line_written_from_inside_a_write_comes_out_once_after_it(tmp_path: Path) -> None:
    # A signal handler that logs runs between any two bytecodes, so also between a
    # write() to the descriptor and the backlog catching up with what it took.
    path = tmp_path / "app.log"
    sink = LineSink.for_path(str(path))
    real_write = sink._write
    calls = [0]

    def interrupted(data: bytes | bytearray) -> int:
        written = real_write(data)
        calls[0] += 1
        if calls[0] == 1:
            sink.write_now(b"from the handler\n")
        return written

    sink._write = interrupted  # type: ignore[method-assign]
    sink.write(b"access line\n")
    assert path.read_bytes() == b"access line\nfrom the handler\n"
    sink.close()


def test_lines_from_an_app_thread_and_the_event_loop_each_come_out_once(
    tmp_path: Path,
) -> None:
    # Access lines are queued on the event loop while an app's thread (Django's
    # sync_to_async, Litestar's queue listener) logs records into the same sink.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    path = tmp_path / "app.log"
    sink = LineSink.for_path(str(path))
    count = 3000

    def app_thread() -> None:
        for i in range(count):
            sink.write_now(b"record %d\n" % i)

    async def serve() -> None:
        sink.loop = asyncio.get_running_loop()
        thread = threading.Thread(target=app_thread)
        thread.start()
        for i in range(count):
            sink.write(b"access %d\n" % i)
            if i % 7 == 0:
                await asyncio.sleep(0)  # the end of a loop turn: the queued lines are written
        await asyncio.to_thread(thread.join, 30)
        sink.loop = None

    try:
        asyncio.run(serve())
    finally:
        sys.setswitchinterval(previous)
    sink.close()
    lines = path.read_bytes().splitlines()
    expected = [b"record %d" % i for i in range(count)] + [b"access %d" % i for i in range(count)]
    assert sorted(lines) == sorted(expected)
    assert [line for line in lines if line.startswith(b"access")] == expected[count:]
