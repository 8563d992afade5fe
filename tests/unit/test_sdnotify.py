"""sd_notify on a real AF_UNIX datagram socket of our own, read the way systemd reads it.

No systemd as PID 1 here: tests/notify_socket.py binds the socket, turns on
SO_PASSCRED and reports each datagram with the pid that sent it, which is
what NotifyAccess=main decides on.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.system import sdnotify
from supervisor.system.sdnotify import Notifier
from tests.notify_socket import Message, NotifySocket

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path / "notify.sock") as sock:
        yield sock


@pytest.fixture(autouse=True)
def close_notifiers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every Notifier a test makes is closed, even when the test fails."""
    made: list[Notifier] = []
    original = Notifier.__init__

    def tracking_init(self: Notifier, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Notifier, "__init__", tracking_init)
    yield
    for notifier in made:
        notifier.close()


def one(listener: NotifySocket) -> Message:
    message = listener.receive(2.0)
    assert message is not None, "nothing arrived"
    return message


# Pure helpers -------------------------------------------------------------------


def test_notify_address_kinds() -> None:
    assert sdnotify.notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.notify_address("@/org/systemd/notify/42") == b"\0/org/systemd/notify/42"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("run/notify", "neither an absolute socket path"),
        ("@", "neither an absolute socket path"),
        ("vsock:2:1234", "neither an absolute socket path"),
        ("/" + "x" * 107, "longer than a socket path"),
        ("@" + "x" * 108, "longer than a socket address"),
    ],
)
def test_notify_address_refuses(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        sdnotify.notify_address(value)


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_PID": "4242"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(environ, 4242) == interval


def test_upgrade_environ_hands_our_watchdog_to_the_new_supervisor() -> None:
    ours = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "10", "A": "b"}
    env = sdnotify.upgrade_environ(ours, old_pid=10, new_pid=11)
    assert env == {**ours, "WATCHDOG_PID": "11"}
    assert ours["WATCHDOG_PID"] == "10", "the input is not changed"
    assert sdnotify.watchdog_interval(env, 11) == 0.5
    # No WATCHDOG_PID: it was ours all the same, and becomes the new one's.
    env = sdnotify.upgrade_environ({"WATCHDOG_USEC": "1000000"}, old_pid=10, new_pid=11)
    assert env["WATCHDOG_PID"] == "11"
    # A watchdog for someone else stays theirs; no watchdog, nothing added.
    theirs = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "9"}
    assert sdnotify.upgrade_environ(theirs, old_pid=10, new_pid=11) == theirs
    assert sdnotify.upgrade_environ({"NOTIFY_SOCKET": "/n"}, old_pid=10, new_pid=11) == {
        "NOTIFY_SOCKET": "/n"
    }


def test_scrub_environ() -> None:
    env = {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    sdnotify.scrub_environ(env)
    assert env == {"PATH": "/bin"}
    sdnotify.scrub_environ(env)  # twice is fine
    assert env == {"PATH": "/bin"}


def test_status_text() -> None:
    text = sdnotify.status_text(serving=4, workers=4, generation=3, requests=1200)
    assert text == "4/4 workers serving, generation 3, 1200 requests"
    text = sdnotify.status_text(
        serving=3,
        workers=4,
        generation=4,
        requests=1,
        booting=1,
        draining=2,
        phase="rolling restart",
    )
    assert text == (
        "rolling restart: 3/4 workers serving, 1 booting, 2 draining, generation 4, 1 request"
    )
    text = sdnotify.status_text(serving=0, workers=2, generation=1, requests=0, phase="a\nb")
    assert text == "a b: 0/2 workers serving, generation 1, 0 requests"


def test_one_line() -> None:
    assert sdnotify.one_line("two\nlines\r\tand  more") == "two lines and more"
    assert sdnotify.one_line("\x00nul\x1b[0m") == "nul [0m"
    long = sdnotify.one_line("word " * 100)
    assert len(long) == sdnotify.STATUS_MAX and long.endswith("...")
    assert ("word " * 100).startswith(long[:-3])
    assert sdnotify.one_line("é" * 10, limit=10) == "é" * 10


def test_lasting_fields_keep_state_and_main_pid_only() -> None:
    assert sdnotify.lasting_fields(["STATUS=x", "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=5"]) == ()
    assert sdnotify.lasting_fields(["RELOADING=1", "MONOTONIC_USEC=7", "STATUS=x"]) == (
        "RELOADING=1",
        "MONOTONIC_USEC=7",
    )
    # The last state wins; the RELOADING timestamp goes with it.
    fields = ["MAINPID=5", "RELOADING=1", "MONOTONIC_USEC=7", "READY=1", "MAINPID=6"]
    assert sdnotify.lasting_fields(fields) == ("MAINPID=6", "READY=1")


def test_merge_fields_lets_new_state_supersede_pending() -> None:
    pending = ("MAINPID=5", "RELOADING=1", "MONOTONIC_USEC=7")
    assert sdnotify.merge_fields(pending, ("WATCHDOG=1",)) == (*pending, "WATCHDOG=1")
    assert sdnotify.merge_fields(pending, ("READY=1", "STATUS=x")) == (
        "MAINPID=5",
        "READY=1",
        "STATUS=x",
    )
    assert sdnotify.merge_fields(pending, ("MAINPID=6",)) == (
        "RELOADING=1",
        "MONOTONIC_USEC=7",
        "MAINPID=6",
    )


# The client on a real socket ------------------------------------------------------


def test_without_notify_socket_everything_is_a_quiet_no_op(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None, "no socket, no watchdog"
    sends = [
        notifier.ready("x"),
        notifier.reloading(),
        notifier.stopping(),
        notifier.main_pid(1234),
        notifier.status("x", force=True),
        notifier.watchdog(),
        notifier.extend_timeout(5),
        notifier.notify("X=1"),
    ]
    assert sends == [False] * len(sends)
    assert notifier._sock is None, "no socket was opened"
    assert caplog.records == []


def test_an_unsupported_address_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:999"})
        assert not notifier.ready()
    assert not notifier.enabled
    assert [r.getMessage() for r in caplog.records] == [
        "NOTIFY_SOCKET='vsock:2:999' is neither an absolute socket path nor an abstract "
        "socket (@name), the only kinds supported; not notifying systemd."
    ]


def test_lifecycle_sequence_from_our_pid(listener: NotifySocket) -> None:
    notifier = Notifier(listener.env)
    assert notifier.enabled

    assert notifier.ready("2/2 workers serving")
    message = one(listener)
    assert message.fields == ("READY=1", "STATUS=2/2 workers serving")
    assert message.pid == os.getpid(), "systemd checks this against the main pid"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("rolling restart")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = one(listener)
    assert message.fields[0] == "RELOADING=1"
    assert before <= int(message.tags["MONOTONIC_USEC"]) <= after
    assert message.tags["STATUS"] == "rolling restart"

    assert notifier.extend_timeout(90.5)
    assert one(listener).fields == ("EXTEND_TIMEOUT_USEC=90500000",)
    assert notifier.ready()
    assert one(listener).fields == ("READY=1",)
    assert notifier.main_pid(4321, "upgraded")
    assert one(listener).fields == ("MAINPID=4321", "STATUS=upgraded")
    assert notifier.stopping("draining")
    assert one(listener).fields == ("STOPPING=1", "STATUS=draining")
    assert notifier.notify("CUSTOM=a\nb")
    assert one(listener).fields == ("CUSTOM=a b",), "a newline cannot forge a field"
    assert notifier.status("file \udcff.py changed", force=True)
    assert one(listener).fields == ("STATUS=file .py changed",)
    assert notifier.notify("STATUS=\udcff")
    assert one(listener).fields == ("STATUS=?",), "valid UTF-8, never an exception"
    assert not notifier.extend_timeout(0)
    assert listener.receive(0.05) is None
    notifier.close()


def test_abstract_socket(tmp_path: Path) -> None:
    with NotifySocket(abstract=f"asgi-supervisor-test-{uuid.uuid4().hex}") as listener:
        notifier = Notifier(listener.env)
        assert notifier.ready()
        assert one(listener).fields == ("READY=1",)
        notifier.close()


def test_status_is_sent_on_change_at_most_once_per_interval(listener: NotifySocket) -> None:
    clock = FakeClock()
    notifier = Notifier(listener.env, status_interval=1.0, clock=clock)
    assert notifier.status("1/2 workers serving")
    assert one(listener).fields == ("STATUS=1/2 workers serving",)
    clock.now += 5
    assert not notifier.status("1/2 workers serving"), "unchanged"
    assert notifier.status("2/2 workers serving")
    clock.now += 0.5
    assert not notifier.status("1/2 workers serving"), "too soon"
    assert not notifier.status("0/2 workers serving"), "too soon"
    assert [m.fields for m in listener.drain()] == [("STATUS=2/2 workers serving",)]
    clock.now += 0.5
    assert notifier.status("0/2 workers serving"), "the next call after the interval"
    clock.now += 0.1
    assert notifier.status("draining", force=True)
    assert [m.fields for m in listener.drain()] == [
        ("STATUS=0/2 workers serving",),
        ("STATUS=draining",),
    ]
    # A lifecycle message's status counts as the last one sent.
    clock.now += 5
    assert notifier.ready("serving")
    assert not notifier.status("serving")
    assert not notifier.status("serving, 1 request"), "within the interval of ready()"
    notifier.close()


def test_watchdog_pings_only_for_our_pid(listener: NotifySocket) -> None:
    ours = Notifier({**listener.env, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_interval == 2.0
    assert ours.watchdog()
    assert one(listener).fields == ("WATCHDOG=1",)
    theirs = Notifier({**listener.env, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert theirs.watchdog_interval is None
    assert not theirs.watchdog()
    assert Notifier(listener.env).watchdog_interval is None
    assert listener.receive(0.05) is None
    ours.close()
    theirs.close()


def test_unreachable_socket_is_one_warning_then_quiet_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later.sock"
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.DEBUG, logger="supervisor.system.sdnotify"):
        assert not notifier.ready("booted")
        for _ in range(5):
            assert not notifier.status("x", force=True)
            assert not notifier.watchdog()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            f"systemd's notify socket {path} is unreachable (No such file or directory); "
            "serving on without telling systemd."
        ]
        with NotifySocket(path) as listener:
            assert notifier.status("serving", force=True)
            # READY=1 never arrived: it rides along with the first datagram that does.
            assert one(listener).fields == ("READY=1", "STATUS=serving")
            assert notifier.status("serving, 1 request", force=True)
            assert one(listener).fields == ("STATUS=serving, 1 request",)
        assert caplog.records[-1].getMessage() == (f"systemd's notify socket {path} answers again.")
    notifier.close()


def test_a_stale_socket_file_is_unreachable_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stale.sock"
    NotifySocket(path).sock.close()  # the file stays, nobody reads it
    assert path.exists()
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.WARNING):
        assert not notifier.ready()
        assert not notifier.ready()
    assert len(caplog.records) == 1
    assert "unreachable (Connection refused)" in caplog.records[0].getMessage()
    notifier.close()


@pytest.mark.timeout(20)  # a blocking send would hang here
def test_a_full_queue_never_blocks_and_keeps_the_state(
    listener: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({**listener.env, "WATCHDOG_USEC": "1000000"})
    # The kernel queues net.unix.max_dgram_qlen datagrams (10 by default) for
    # a reader that does not read; then a non-blocking send says EAGAIN.
    with caplog.at_level(logging.WARNING):
        sent = 0
        while notifier.watchdog():
            sent += 1
            assert sent < 10_000, "the queue never filled"
        started = time.monotonic()
        assert not notifier.ready("4/4 workers serving")
        assert not notifier.main_pid(77)
        assert time.monotonic() - started < 0.5, "a full queue must not block the loop"
    assert caplog.records == [], "a busy systemd is not an unreachable one"
    queued = listener.drain()
    assert len(queued) == sent
    assert notifier.watchdog()
    # The state and the main pid go out with the next datagram; the status
    # text does not (the next status() call sends a current one).
    assert one(listener).fields == ("MAINPID=77", "READY=1", "WATCHDOG=1")
    assert notifier.status("4/4 workers serving")
    assert one(listener).fields == ("STATUS=4/4 workers serving",)
    notifier.close()


def test_a_forked_child_cannot_send_for_us(listener: NotifySocket) -> None:
    notifier = Notifier(listener.env)
    assert notifier.ready()
    pid = os.fork()
    if pid == 0:  # the child: a worker that inherited the object
        os._exit(0 if not notifier.ready() and not notifier.notify("X=1") else 1)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child did not exit")
    assert os.waitstatus_to_exitcode(status) == 0
    assert [m.pid for m in listener.drain()] == [os.getpid()]
    notifier.close()


def test_another_process_is_seen_with_its_own_pid(listener: NotifySocket) -> None:
    """What NotifyAccess=main rests on: credentials name the sending process."""
    code = (
        "from supervisor.system.sdnotify import Notifier; "
        "import sys; sys.exit(0 if Notifier().ready('child') else 1)"
    )
    env = {**os.environ, **listener.env}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    try:
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    message = one(listener)
    assert message.fields == ("READY=1", "STATUS=child")
    assert message.pid == process.pid != os.getpid()


def test_same_datagram_as_systemd_notify(listener: NotifySocket) -> None:
    """systemd's own client sends the same bytes for the same state."""
    tool = shutil.which("systemd-notify")
    if tool is None:
        pytest.skip("systemd-notify is not installed")
    # --no-block: without it systemd-notify waits for a BARRIER=1 answer that
    # only a real systemd gives.
    done = subprocess.run(
        [tool, "--no-block", "--ready", "--status=4/4 workers serving"],
        env=listener.env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 0, done.stderr
    reference = one(listener).fields
    notifier = Notifier(listener.env)
    assert notifier.ready("4/4 workers serving")
    assert one(listener).fields == reference == ("READY=1", "STATUS=4/4 workers serving")
    notifier.close()


def test_socket_is_non_blocking_and_close_on_exec(listener: NotifySocket) -> None:
    notifier = Notifier(listener.env)
    assert notifier.ready()
    sock = notifier._sock
    assert isinstance(sock, socket.socket)
    assert sock.getblocking() is False
    assert not os.get_inheritable(sock.fileno())
    notifier.close()
    assert notifier._sock is None
    assert notifier.ready(), "a send after close() opens a new socket"
    assert len(listener.drain()) == 2
    notifier.close()
