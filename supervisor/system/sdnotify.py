"""sd_notify: tell systemd what the supervisor is doing (``Type=notify`` units).

The protocol is one datagram on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
holding newline-separated ``KEY=VALUE`` fields (sd_notify(3)), so no library
is needed. systemd reads the sender's pid from the socket credentials and,
with ``NotifyAccess=main``, drops every message that does not come from the
service's main pid: workers must never notify, and during a USR2 upgrade it
is the *old* supervisor that announces the new one with ``MAINPID=``.

Nothing here raises into the caller or blocks it. The socket is non-blocking:
a datagram systemd has no room for is not waited for; the state it carried
(READY/RELOADING/STOPPING, MAINPID) rides along with the next one instead.
An unreachable socket is one warning line, then silence until it answers
again. The pure helpers (address, watchdog, status text, environments) are
separate so they can be tested and reused without a socket.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping

logger = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
ENV_NAMES = (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID)

# systemd accepts far longer STATUS= texts; `systemctl status` shows one line.
STATUS_MAX = 200
DEFAULT_STATUS_INTERVAL = 1.0
# sun_path is 108 bytes on Linux, with room for the terminating NUL of a path.
_SUN_PATH_MAX = 107
# systemd applies the last of these it finds by precedence, not by order:
# STOPPING over READY over RELOADING (src/core/service.c). A datagram carries one.
_STATE_TAGS = ("READY=1", "RELOADING=1", "STOPPING=1")


# Pure helpers ---------------------------------------------------------------------


def notify_address(value: str) -> str | bytes:
    """The ``sendto()`` address for a ``$NOTIFY_SOCKET`` value.

    An absolute path is a socket file; ``@name`` is a Linux abstract socket
    (``b"\\0name"``). Anything else (a relative path, systemd's ``vsock:``
    addresses) raises ValueError with a sentence naming the value.
    """
    if value.startswith("@") and len(value) > 1:
        address = b"\0" + os.fsencode(value[1:])
        if len(address) > _SUN_PATH_MAX + 1:
            raise ValueError(f"NOTIFY_SOCKET={value!r} is longer than a socket address can be")
        return address
    if value.startswith("/"):
        if len(os.fsencode(value)) > _SUN_PATH_MAX:
            raise ValueError(f"NOTIFY_SOCKET={value!r} is longer than a socket path can be")
        return value
    raise ValueError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute socket path nor an abstract "
        "socket (@name), the only kinds supported"
    )


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog is meant for ``pid``.

    Half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) recommends, so one
    late ping is not yet a missed one. ``WATCHDOG_PID``, when set, must be
    ``pid``: the variables survive fork and exec into processes systemd does
    not watch (sd_watchdog_enabled applies the same rule).
    """
    usec = environ.get(WATCHDOG_USEC, "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get(WATCHDOG_PID, "").strip()
    if owner and owner != str(pid):
        return None
    return int(usec) / 2_000_000


def upgrade_environ(environ: Mapping[str, str], *, old_pid: int, new_pid: int) -> dict[str, str]:
    """The environment for the supervisor that ``old_pid`` execs to upgrade itself.

    ``NOTIFY_SOCKET`` stays, and a watchdog meant for ``old_pid`` is handed to
    ``new_pid`` (call this in the forked child, which execs with its own pid).
    Until the old supervisor sends ``MAINPID=new_pid`` systemd ignores the new
    one's messages, so it must not count on its pings before then.
    """
    env = dict(environ)
    if watchdog_interval(environ, old_pid) is not None:
        env[WATCHDOG_PID] = str(new_pid)
    return env


def scrub_environ(environ: MutableMapping[str, str]) -> None:
    """Forget the notify socket and the watchdog (in a worker, right after fork).

    A worker's messages are rejected under ``NotifyAccess=main`` (one journal
    line each); under ``NotifyAccess=all`` they would be believed, and an app
    library that pings the watchdog would keep a hung supervisor alive.
    """
    for name in ENV_NAMES:
        environ.pop(name, None)


def one_line(text: str, limit: int = STATUS_MAX) -> str:
    """``text`` as one printable line of at most ``limit`` characters.

    A newline would start a new ``KEY=VALUE`` field of the datagram.
    """
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 3].rstrip() + "..."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def status_text(
    *,
    serving: int,
    workers: int,
    generation: int,
    requests: int,
    booting: int = 0,
    draining: int = 0,
    phase: str = "",
) -> str:
    """The ``STATUS=`` line for ``systemctl status``, from the pool's counts.

    ``workers`` is the number wanted, ``serving`` how many of them serve;
    ``phase`` names what the supervisor is doing when it is not just serving
    ("rolling restart", "upgrading", "draining")::

        4/4 workers serving, generation 3, 1200 requests
        rolling restart: 3/4 workers serving, 1 booting, 1 draining, generation 4, 1 request
    """
    parts = [f"{serving}/{workers} workers serving"]
    if booting:
        parts.append(f"{booting} booting")
    if draining:
        parts.append(f"{draining} draining")
    parts.append(f"generation {generation}")
    parts.append(_count(requests, "request"))
    text = ", ".join(parts)
    return one_line(f"{phase}: {text}" if phase.strip() else text)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock ``MONOTONIC_USEC=`` is read against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def lasting_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """What of an unsent datagram must still reach systemd: the last state tag
    (with the ``MONOTONIC_USEC=`` that dates a RELOADING=1) and ``MAINPID=``.

    Pings, status texts and timeout extensions are not kept: the next one
    replaces them, and a stale one would mislead.
    """
    kept: list[str] = []
    state: list[str] = []
    for field in fields:
        if field.startswith("MAINPID="):
            kept = [f for f in kept if not f.startswith("MAINPID=")] + [field]
        elif field in _STATE_TAGS:
            state = [field]
        elif field.startswith("MONOTONIC_USEC=") and state == ["RELOADING=1"]:
            state.append(field)
    return (*kept, *state)


def merge_fields(pending: tuple[str, ...], fields: tuple[str, ...]) -> tuple[str, ...]:
    """A new datagram with what an earlier unsent one must still say in front.

    A state tag in ``fields`` supersedes a pending one (systemd would not
    apply both in order), and so does a new ``MAINPID=``.
    """
    new_state = any(field in _STATE_TAGS for field in fields)
    new_main = any(field.startswith("MAINPID=") for field in fields)
    carried = [
        field
        for field in pending
        if not (new_main and field.startswith("MAINPID="))
        and not (new_state and (field in _STATE_TAGS or field.startswith("MONOTONIC_USEC=")))
    ]
    return (*carried, *fields)


# The client -----------------------------------------------------------------------


class Notifier:
    """Sends sd_notify datagrams for the process that created it.

    Built from ``$NOTIFY_SOCKET`` (``environ`` defaults to ``os.environ``);
    without it every method is a cheap no-op returning False. Each method
    returns True when the kernel took the datagram, False otherwise, and
    never raises. A forked child that inherits the object cannot send: the
    pid is checked on each send.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.pid = os.getpid()
        self.status_interval = status_interval
        self.socket_name = environ.get(NOTIFY_SOCKET, "")
        self.address: str | bytes | None = None
        if self.socket_name:
            try:
                self.address = notify_address(self.socket_name)
            except ValueError as exc:
                logger.warning("%s; not notifying systemd.", exc)
        #: Seconds between WATCHDOG=1 pings, or None when systemd does not watch us.
        self.watchdog_interval = (
            watchdog_interval(environ, self.pid) if self.address is not None else None
        )
        self._clock = clock
        self._sock: socket.socket | None = None
        self._reachable = True
        self._pending: tuple[str, ...] = ()
        self._last_status: str | None = None
        self._status_sent_at = -math.inf

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to (it may still be unreachable)."""
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: the service is up (first start, end of a roll or an upgrade)."""
        return self._send_state("READY=1", status)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` (dated by ``MONOTONIC_USEC=``): a roll began; ready() ends it."""
        return self._send_state("RELOADING=1", status, f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the drain began. systemd takes no READY=1 after it."""
        return self._send_state("STOPPING=1", status)

    def main_pid(self, pid: int, status: str | None = None) -> bool:
        """``MAINPID=pid``: another process of the service is now its main one.

        Only the current main pid may say so under ``NotifyAccess=main``: the
        old supervisor sends it for the new one once the new one serves, and
        before it drains its own workers and exits.
        """
        return self._send_state(f"MAINPID={pid}", status)

    def status(self, text: str, *, force: bool = False) -> bool:
        """``STATUS=text`` when it changed, at most once per ``status_interval``.

        A change inside the interval is not sent: call this on every change
        and on every tick of the loop, and the latest text goes out on the
        first call after the interval. ``force`` skips the interval (an
        unchanged text is still not sent again).
        """
        line = one_line(text)
        if line == self._last_status:
            return False
        now = self._clock()
        if not force and now - self._status_sent_at < self.status_interval:
            return False
        if not self.notify(f"STATUS={line}"):
            return False
        self._last_status, self._status_sent_at = line, now
        return True

    def watchdog(self) -> bool:
        """``WATCHDOG=1``, when systemd watches this pid (``watchdog_interval`` is set).

        Ping only from the loop itself, and only while it is healthy: a ping
        from a helper thread would hide the hang the watchdog is there for.
        """
        if self.watchdog_interval is None:
            return False
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the current start, reload or stop may take until
        ``seconds`` from now (systemd moves its deadline there if that is later)."""
        if not seconds > 0:
            return False
        return self.notify(f"EXTEND_TIMEOUT_USEC={math.ceil(seconds * 1_000_000)}")

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (each ``KEY=VALUE``) as one datagram."""
        if self.address is None or os.getpid() != self.pid or not fields:
            return False
        # A newline inside a value would be read as a field of its own.
        message = merge_fields(self._pending, tuple(f.replace("\n", " ") for f in fields))
        try:
            # systemd ignores a STATUS= that is not UTF-8; a lone surrogate
            # (an undecodable file name) becomes "?" instead of an exception.
            data = "\n".join(message).encode("utf-8", "replace")
            self._socket().sendto(data, self.address)
        except BlockingIOError:
            # systemd's queue is full: it is busy, not gone. Never wait for it.
            self._pending = lasting_fields(message)
            logger.debug("systemd's notify socket is full; %s waits for the next send.", fields)
            return False
        except OSError as exc:
            self._pending = lasting_fields(message)
            self._unreachable(exc)
            return False
        self._pending = ()
        if not self._reachable:
            self._reachable = True
            logger.info("systemd's notify socket %s answers again.", self.socket_name)
        return True

    def close(self) -> None:
        """Close the socket; later sends open a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send_state(self, tag: str, status: str | None, *extra: str) -> bool:
        fields = (tag, *extra)
        line = None if status is None else one_line(status)
        if line is not None:
            fields += (f"STATUS={line}",)
        sent = self.notify(*fields)
        if sent and line is not None:
            self._last_status, self._status_sent_at = line, self._clock()
        return sent

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def _unreachable(self, exc: OSError) -> None:
        if self._reachable:
            self._reachable = False
            reason = exc.strerror or str(exc)
            logger.warning(
                "systemd's notify socket %s is unreachable (%s); serving on without "
                "telling systemd.",
                self.socket_name,
                reason,
            )
