"""SIGUSR2: the supervisor upgrades itself in place, without closing its listeners.

The old supervisor starts a new one with the same command line (the code and
config now on disk) and hands it its listening sockets: they stay open in
both, so no connection is refused in between. The new one adopts them (no
bind), starts its own workers and, once they serve, takes the pid file and
the control socket and says "ready" on a pipe. Only then does the old one
tell systemd the new main pid and drain its own workers and exit, exactly as
on SIGTERM. If the new one exits before serving, or has not served within
--timeout-boot plus a margin (then it is stopped), the old one keeps serving
and says why; the new one's own log lines say what went wrong.

The hand-off travels in one environment variable, ``ASGI_SUPERVISOR_UPGRADE``
(JSON: the old pid, the inherited listener fds, the metrics fd, the pipe),
which the new supervisor removes from its environment first thing, so its
workers and its own upgrades never see a stale one.

As PID 1 (a container without an init) an upgrade is refused: the container
ends when PID 1 exits, taking the new supervisor with it. Roll the container
instead, or restart the workers with new app code by SIGHUP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

import msgspec

from supervisor.errors import ConfigError, SupervisorError
from supervisor.system import ownership, pidfile
from supervisor.system.exits import describe_status
from supervisor.system.unix import is_live

logger = logging.getLogger("supervisor")

ENV = "ASGI_SUPERVISOR_UPGRADE"  # not SUPERVISOR_*: those are options
# Beyond --timeout-boot: the new interpreter's own start and imports.
BOOT_MARGIN = 30.0
READY = b"ready\n"
KILL_AFTER = 5.0


class Handoff(msgspec.Struct, frozen=True):
    """What an upgrading supervisor passes to its successor."""

    old_pid: int
    listeners: tuple[int, ...]
    metrics: int | None
    ready: int

    def encode(self) -> str:
        return json.dumps(
            {
                "from": self.old_pid,
                "listeners": list(self.listeners),
                "metrics": self.metrics,
                "ready": self.ready,
            }
        )


def decode(text: str) -> Handoff:
    """The hand-off in ``$ASGI_SUPERVISOR_UPGRADE``; ConfigError (one line) when it is not one."""
    try:
        data = json.loads(text)
        handoff = Handoff(
            old_pid=int(data["from"]),
            listeners=tuple(int(fd) for fd in data["listeners"]),
            metrics=None if data["metrics"] is None else int(data["metrics"]),
            ready=int(data["ready"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{ENV}={text!r} is not what an upgrading supervisor passes; unset it."
        ) from exc
    return handoff


def take_handoff(environ: MutableMapping[str, str]) -> Handoff | None:
    """The hand-off meant for this process, removed from ``environ``; None when not upgrading."""
    text = environ.pop(ENV, None)
    return None if text is None else decode(text)


def adopt(fd: int) -> socket.socket:
    """An inherited listener as it was (listening, or only bound under --reuse-port)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(
            f"{ENV}: inherited fd {fd} is not a socket ({exc.strerror or exc})."
        ) from exc
    sock.set_inheritable(False)
    return sock


def why_not(
    *,
    pid: int,
    command: list[str] | None,
    stopping: bool,
    pending: int | None,
    taking_over: int | None = None,
) -> str | None:
    """Why a SIGUSR2 cannot upgrade now (one sentence), or None when it can."""
    if taking_over is not None:
        return (
            f"this supervisor is still taking over from supervisor {taking_over}"
            " (an upgrade in progress); ignoring this one"
        )
    if pending is not None:
        return f"an upgrade is already in progress (new supervisor {pending}); ignoring this one"
    if stopping:
        return "the supervisor is stopping"
    if pid == 1:
        return (
            "the supervisor is PID 1, and the container ends when PID 1 exits; roll the"
            " container instead (SIGHUP restarts the workers with the new app code)"
        )
    if command is None:
        return (
            "this supervisor was started from Python (supervisor.run()), so there is no"
            " command line to start again"
        )
    return None


def command_line(orig_argv: list[str], executable: str) -> list[str]:
    """The command that started this process, with the interpreter by its full path."""
    return [executable, *orig_argv[1:]]


class Pending(msgspec.Struct):
    proc: subprocess.Popen[bytes]
    ready: int
    deadline: float
    timed_out: bool = False


class Upgrader:
    """The old side: starts the successor, watches it, hands over or gives up."""

    def __init__(
        self,
        *,
        command: list[str] | None,
        environ: Callable[[], dict[str, str]],
        listeners: list[socket.socket],
        metrics: socket.socket | None,
        timeout_boot: float,
        stopping: Callable[[], bool],
        handed_over: Callable[[int], None],
        began: Callable[[], None] = lambda: None,
        gave_up: Callable[[str], None] = lambda reason: None,
        pre_exec: Callable[[], Callable[[], None] | None] = lambda: None,
    ) -> None:
        self.began, self.gave_up = began, gave_up
        self.pre_exec = pre_exec  # what runs in the fork before exec, for this upgrade
        self.command = command
        self.environ = environ
        self.listeners = listeners
        self.metrics = metrics
        self.timeout_boot = timeout_boot
        self.stopping = stopping
        self.on_handed_over = handed_over
        self.pending: Pending | None = None
        self.successor: int | None = None  # set once it serves
        self.taking_over: int | None = None  # we are a successor that does not serve yet

    def request(self) -> None:
        """SIGUSR2."""
        refusal = why_not(
            pid=os.getpid(),
            command=self.command,
            stopping=self.stopping() or self.successor is not None,
            pending=self.pending.proc.pid if self.pending else None,
            taking_over=self.taking_over,
        )
        if refusal:
            logger.warning("Received SIGUSR2: not upgrading: %s", refusal)
            return
        assert self.command is not None
        fds = [sock.fileno() for sock in self.listeners]
        metrics = self.metrics.fileno() if self.metrics is not None else None
        read, write = os.pipe()
        handoff = Handoff(os.getpid(), tuple(fds), metrics, write)
        env = {**self.environ(), ENV: handoff.encode()}
        passed = (*fds, *([metrics] if metrics is not None else []), write)
        try:
            # gunicorn's pre_exec moment: in the fork that becomes the new supervisor,
            # right before exec (Popen runs it there; the supervisor has no threads).
            proc = subprocess.Popen(
                self.command,
                env=env,
                pass_fds=passed,
                close_fds=True,
                preexec_fn=self.pre_exec(),  # noqa: PLW1509 - no threads here
            )
        except (OSError, subprocess.SubprocessError) as exc:  # the latter: pre_exec raised
            os.close(read)
            logger.error(
                "Received SIGUSR2: cannot start %s (%s); still serving",
                self.command[0],
                getattr(exc, "strerror", None) or exc,
            )
            return
        finally:
            os.close(write)
        os.set_blocking(read, False)
        deadline = time.monotonic() + self.timeout_boot + BOOT_MARGIN
        self.pending = Pending(proc, read, deadline)
        logger.info(
            "Received SIGUSR2: upgrading; new supervisor %d starts with the same listeners",
            proc.pid,
        )
        self.began()

    def tick(self, now: float) -> None:
        """Has the successor said it serves? Has it run out of time?"""
        pending = self.pending
        if pending is None:
            return
        try:
            said = os.read(pending.ready, 64)
        except BlockingIOError:
            said = None
        if said == READY:
            self._hand_over(pending)
        elif now > pending.deadline and not pending.timed_out:
            pending.timed_out = True
            pending.deadline = now + KILL_AFTER
            logger.error(
                "Upgrade failed: the new supervisor %d was not serving after %.0fs; stopping"
                " it, supervisor %d keeps serving",
                pending.proc.pid,
                self.timeout_boot + BOOT_MARGIN,
                os.getpid(),
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pending.proc.pid, signal.SIGQUIT)  # fast: its workers go too
            self.gave_up(
                f"the new supervisor was not serving after {self.timeout_boot + BOOT_MARGIN:.0f}s"
            )
        elif now > pending.deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pending.proc.pid, signal.SIGKILL)

    def on_exit(self, pid: int, status: int) -> bool:
        """A child that is not a worker exited: was it our successor?"""
        pending = self.pending
        if pending is None or pid != pending.proc.pid:
            return False
        pending.proc.returncode = os.waitstatus_to_exitcode(
            status
        )  # reaped by the arbiter, not by Popen
        os.close(pending.ready)
        self.pending = None
        if pending.timed_out:
            logger.info("The new supervisor %d stopped: %s", pid, describe_status(status))
            return True
        logger.error(
            "Upgrade failed: the new supervisor %d %s before serving; supervisor %d keeps"
            " serving (its log lines above say why)",
            pid,
            describe_status(status),
            os.getpid(),
        )
        self.gave_up(f"the new supervisor {describe_status(status)} before serving")
        return True

    def abandon(self) -> None:
        """We are stopping (SIGTERM mid-upgrade): the successor stops too, or it would
        take the service over after the operator stopped it."""
        pending = self.pending
        if pending is None or pending.timed_out:
            return
        pending.timed_out = True  # its exit is then expected, not a failure
        pending.deadline = time.monotonic() + KILL_AFTER
        logger.info(
            "Stopping: the upgrade is abandoned; stopping the new supervisor %d", pending.proc.pid
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pending.proc.pid, signal.SIGQUIT)

    def _hand_over(self, pending: Pending) -> None:
        os.close(pending.ready)
        self.pending = None
        self.successor = pending.proc.pid
        pending.proc.returncode = 0  # no longer ours to wait for: it outlives us
        logger.info(
            "Upgrade: supervisor %d serves; this one (pid %d) drains its workers and exits",
            self.successor,
            os.getpid(),
        )
        self.on_handed_over(self.successor)


class Successor:
    """The new side: serves on the inherited listeners, then takes over the pid file
    and the control socket and tells the old supervisor it may go."""

    def __init__(self, handoff: Handoff, *, pid_path: str | None, control_path: Path) -> None:
        self.handoff = handoff
        self.pid_path = pid_path
        self.control_final = control_path
        self.control_temp: Path | None = None
        self.pid_file: pidfile.PidFile | None = None
        self.done = False

    def listeners(self) -> list[socket.socket]:
        return [adopt(fd) for fd in self.handoff.listeners]

    def metrics_listener(self) -> socket.socket | None:
        return None if self.handoff.metrics is None else adopt(self.handoff.metrics)

    def control_place(self) -> Path:
        """Where to listen until the hand-over: beside the old supervisor's socket when
        both would use the same path (it still answers `status` until we serve)."""
        final = self.control_final
        if final.exists() and is_live(final):
            self.control_temp = final.with_name(f".{final.name}.{os.getpid()}")
            return self.control_temp
        return final

    def tick(self, served: bool) -> None:
        if served and not self.done:
            self.announce()

    def announce(self) -> None:
        """Our workers serve: the pid file and the control socket are ours, then "ready"."""
        self.done = True
        if self.pid_path:
            try:
                self.pid_file = pidfile.take_over(self.pid_path)
            except SupervisorError as exc:
                logger.error("Upgrade: %s", exc)
        if self.control_temp is not None:
            try:
                self.control_temp.replace(self.control_final)
                ownership.claim(self.control_final)
                self.control_temp = None
            except OSError as exc:
                logger.error(
                    "Upgrade: cannot take the control socket %s (%s); `status` reaches this"
                    " supervisor at %s",
                    self.control_final,
                    exc.strerror or exc,
                    self.control_temp,
                )
        try:
            os.write(self.handoff.ready, READY)
        except OSError as exc:
            logger.warning(
                "Upgrade: cannot tell supervisor %d that this one serves (%s)",
                self.handoff.old_pid,
                exc.strerror or exc,
            )
        with contextlib.suppress(OSError):
            os.close(self.handoff.ready)
        logger.info(
            "Upgrade: serving; supervisor %d drains its workers and exits",
            self.handoff.old_pid,
        )

    def leftovers(self) -> list[Path]:
        """What to remove at exit beside our usual files (a socket never renamed)."""
        return [self.control_temp] if self.control_temp is not None else []
