"""``python -m supervisor status|scale|reload|stop``: the client side of the control socket.

Each command finds the supervisor's socket the way the supervisor chose it
(``--control-socket``, beside ``--pid``, or its default directory), sends one
request and prints one line (``status``: the worker table). A socket found
by itself, rather than named, is trusted only in a directory no one else can
write to and only when its server runs as us or root: another local user
cannot answer in the supervisor's place.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from supervisor.commands.status import render
from supervisor.commands.wire import CLIENT_TIMEOUT, Request, Status
from supervisor.system import places
from supervisor.system.unix import is_live, peer_credentials

EXIT_FAILED = 1


class ControlError(Exception):
    """A command that could not be carried out; the message is the line shown."""


class Target(msgspec.Struct, frozen=True):
    path: Path
    discovered: bool  # found by looking, not named: check who serves it


def find_socket(control_socket: str | None, pid_file: str | None) -> Target:
    if control_socket:
        return Target(Path(control_socket), discovered=False)
    if pid_file:
        _check_dir(Path(pid_file).parent, places.chosen_dir_problem, "--pid")
        candidates = places.beside_pid_candidates(pid_file)
        live = [path for path in candidates if path.exists() and is_live(path)]
        return Target(live[0] if live else candidates[-1], discovered=True)
    directory = places.default_dir()
    if not directory.is_dir():
        raise ControlError("No running supervisor found; pass --pid FILE or --control-socket PATH.")
    _check_dir(directory, places.own_dir_problem, "the default directory")
    live = [path for path in sorted(directory.glob("*.sock")) if is_live(path)]
    if len(live) == 1:
        return Target(live[0], discovered=True)
    if not live:
        raise ControlError("No running supervisor found; pass --pid FILE or --control-socket PATH.")
    names = ", ".join(str(path) for path in live)
    raise ControlError(f"Several supervisors are running ({names}); pass --control-socket PATH.")


def _check_dir(
    directory: Path, verdict: Callable[[os.stat_result, int], str | None], what: str
) -> None:
    try:
        info = directory.lstat() if verdict is places.own_dir_problem else directory.stat()
    except OSError:
        return  # nothing there: the connection attempt will say so
    problem = verdict(info, os.geteuid())
    if problem:
        raise ControlError(
            f"{directory} ({what}) {problem}: not trusting a socket in it;"
            " pass --control-socket PATH."
        )


def send(target: Target, request: Request, timeout: float = CLIENT_TIMEOUT) -> Any:
    """One request, one decoded reply; a reply with an error raises ControlError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(target.path))
            if target.discovered:
                _check_peer(sock, target.path)
            sock.sendall(msgspec.json.encode(request) + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        reply = msgspec.json.decode(b"".join(chunks))
    except (OSError, msgspec.DecodeError) as exc:
        raise ControlError(f"cannot query the supervisor at {target.path}: {exc}") from exc
    if isinstance(reply, dict) and "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply


def _check_peer(sock: socket.socket, path: Path) -> None:
    _, uid = peer_credentials(sock)
    if uid not in (os.geteuid(), 0):
        raise ControlError(f"{path} is served by uid {uid}, not by us; not trusting it")


def query(path: Path, command: str = "status", timeout: float = CLIENT_TIMEOUT) -> Status:
    reply = send(Target(path, discovered=False), Request(command=command), timeout)
    return msgspec.convert(reply, Status)


# Command lines ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAILED, f"Error: {message} (see --help)\n")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m supervisor {command}", description=description)
    parser.add_argument("--pid", metavar="FILE", help="The supervisor's --pid file.")
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        default=os.environ.get("SUPERVISOR_CONTROL_SOCKET"),
        help="The supervisor's control socket.",
    )
    return parser


def _run(args: argparse.Namespace, request: Request) -> int:
    try:
        reply = send(find_socket(args.control_socket, args.pid), request)
    except ControlError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    message = reply.get("message") if isinstance(reply, dict) else None
    if not isinstance(message, str):
        print(f"Error: unexpected reply from the supervisor: {reply!r}", file=sys.stderr)
        return EXIT_FAILED
    print(message)
    return 0


def status_main(argv: Sequence[str]) -> int:
    parser = _parser("status", "Show the workers of a running supervisor.")
    parser.add_argument("--json", action="store_true", help="Print the status as JSON.")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="A live view, refreshed every second (q or Ctrl-C quits; plain lines when"
        " not a terminal).",
    )
    parser.add_argument(
        "-n", "--iterations", type=int, metavar="N", help="With --watch: stop after N refreshes."
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="With --watch: refresh."
    )
    args = parser.parse_args(argv)

    def fetch() -> Status:
        target = find_socket(args.control_socket, args.pid)  # again: it moves on USR2
        return msgspec.convert(send(target, Request(command="status")), Status)

    try:
        if args.watch:
            from supervisor.commands.watch import watch  # noqa: PLC0415

            return watch(fetch, interval=max(args.interval, 0.1), count=args.iterations)
        status = fetch()
    except (ControlError, msgspec.ValidationError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(status)).decode() + "\n")
    else:
        print(render(status))
    return 0


def scale_main(argv: Sequence[str]) -> int:
    parser = _parser("scale", "Set the number of workers of a running supervisor.")
    parser.add_argument("workers", metavar="N", help="The number of workers (1 or more).")
    args = parser.parse_args(argv)
    text = args.workers.strip()
    if not text.isdigit() or int(text) < 1:
        print(
            f"Error: scale N: expected a whole number of 1 or more, got {text!r}", file=sys.stderr
        )
        return EXIT_FAILED
    return _run(args, Request(command="scale", workers=int(text)))


def reload_main(argv: Sequence[str]) -> int:
    parser = _parser("reload", "Rolling restart of every worker (the same as SIGHUP).")
    return _run(parser.parse_args(argv), Request(command="reload"))


def stop_main(argv: Sequence[str]) -> int:
    parser = _parser("stop", "Stop gracefully, draining requests (SIGTERM); --fast: SIGQUIT.")
    parser.add_argument("--fast", action="store_true", help="Fast shutdown, like SIGQUIT.")
    args = parser.parse_args(argv)
    return _run(args, Request(command="stop", fast=args.fast))


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "status": status_main,
    "scale": scale_main,
    "reload": reload_main,
    "stop": stop_main,
    "top": lambda argv: status_main(["--watch", *argv]),  # pm2's and htop's word for it
}
