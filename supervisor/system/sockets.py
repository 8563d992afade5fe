"""Listeners: the sockets the supervisor opens once and every worker inherits.

Because the supervisor owns the listening sockets, a worker that stops
accepting never takes queued connections with it: they wait in the shared
accept queue for a sibling. Supported addresses: ``HOST:PORT`` (IPv4, ``[v6]``),
``unix:PATH``, ``fd://N`` and systemd socket activation (``LISTEN_FDS``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import msgspec

from supervisor.errors import BindError, ConfigError
from supervisor.system import ownership, privileges
from supervisor.system.unix import is_live

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


class BindSpec(msgspec.Struct, frozen=True):
    """One address to listen on, parsed from --bind/--host/--port/--uds."""

    kind: str  # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(text: str) -> BindSpec:
    """Parse one --bind value: ``HOST:PORT``, ``[::1]:PORT``, ``unix:PATH``, ``fd://N``."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ConfigError(f'--bind "{text}": give a socket path after "unix:".')
        return BindSpec("unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not number.isdigit():
            raise ConfigError(f'--bind "{text}": fd:// takes a file descriptor number.')
        return BindSpec("fd", fd=int(number))
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "8000"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f'--bind "{text}": the port must be a number from 0 to 65535.')
    return BindSpec("tcp", host=host or "0.0.0.0", port=int(port_text))


def bind_specs(
    binds: list[str], host: str, port: int, uds: str | None, environ: dict[str, str]
) -> list[BindSpec]:
    """Every address to listen on, in order: systemd's, then --bind, else --uds / --host:--port."""
    specs = [BindSpec("fd", fd=fd) for fd in systemd_fds(environ)]
    specs += [parse_bind(item) for item in binds]
    if uds:
        specs.append(BindSpec("unix", path=uds))
    if not specs:
        specs.append(BindSpec("tcp", host=host, port=port))
    return specs


def systemd_fds(environ: dict[str, str]) -> list[int]:
    """File descriptors passed by systemd socket activation, if meant for us."""
    count = environ.get("LISTEN_FDS", "")
    owner = environ.get("LISTEN_PID", "")
    if not count.isdigit() or (owner and owner != str(os.getpid())):
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def open_listener(
    spec: BindSpec,
    *,
    backlog: int,
    reuse_port: bool = True,
    listen: bool = True,
    exclusive: bool = False,
    owner: Any = None,
    umask: int | None = None,
) -> socket.socket:
    """Create (or adopt) the listening socket for one address.

    ``listen=False`` only binds a TCP address: with --reuse-port the supervisor
    holds the port (and resolves port 0) while each worker listens on its own
    socket; a bound socket that never listens takes no connections.
    ``exclusive`` refuses a TCP port another socket already listens on, even
    though ours sets SO_REUSEPORT (see :func:`_ensure_free`).
    """
    if spec.kind == "fd":
        return _adopt_fd(spec)
    if spec.kind == "unix":
        return _open_unix(spec, backlog, owner, umask)
    return _open_tcp(spec, backlog, reuse_port, listen, exclusive)


def per_worker_listeners(templates: list[socket.socket], backlog: int) -> list[socket.socket]:
    """--reuse-port: a fresh SO_REUSEPORT listener for each TCP address the
    supervisor holds bound but not listening; shared listeners pass through."""
    listeners: list[socket.socket] = []
    for template in templates:
        if template.family not in (socket.AF_INET, socket.AF_INET6) or _is_listening(template):
            listeners.append(template)
            continue
        sock = socket.socket(template.family, socket.SOCK_STREAM)
        try:
            _set_reuse(sock, reuse_port=True)
            sock.bind(template.getsockname())
            sock.listen(backlog)
        except OSError:
            sock.close()
            for opened in listeners:
                if opened not in templates:
                    opened.close()
            raise
        sock.set_inheritable(True)
        listeners.append(sock)
    return listeners


def _is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def _set_reuse(sock: socket.socket, *, reuse_port: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Lets a second server bind beside us during a deploy (blue/green on one host).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _open_tcp(
    spec: BindSpec, backlog: int, reuse_port: bool, listen: bool, exclusive: bool
) -> socket.socket:
    try:
        # An ASCII host as bytes: a str host goes through the idna codec, whose import
        # (unicodedata, stringprep) is ~4 ms of the start here; IDN hosts still do.
        host = spec.host.encode() if spec.host and spec.host.isascii() else spec.host
        infos = socket.getaddrinfo(
            host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"Cannot listen on {spec}: unknown host ({exc.strerror}).") from exc
    family, kind, proto, _, address = infos[0]
    if exclusive and spec.port:
        _ensure_free(spec, family, address)
    sock = socket.socket(family, kind, proto)
    try:
        _set_reuse(sock, reuse_port=reuse_port)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_failure(spec, exc)) from exc
    sock.set_inheritable(True)
    return sock


def _ensure_free(spec: BindSpec, family: int, address: tuple[object, ...]) -> None:
    """Our listener sets SO_REUSEPORT (so another server may bind beside us
    during a deploy), which would also let us bind beside a server already
    there, silently splitting its traffic. A probe bind without it fails on
    a port another socket listens on; --reuse-port skips the probe."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        _set_reuse(probe, reuse_port=False)
        probe.bind(address)
    except OSError as exc:
        raise BindError(_bind_failure(spec, exc)) from exc
    finally:
        probe.close()


def _open_unix(spec: BindSpec, backlog: int, owner: Any, umask: int | None) -> socket.socket:
    path = Path(spec.path)
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(spec.path)
        privileges.hand_over_socket(path, owner, umask)
        ownership.claim(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_failure(spec, exc)) from exc
    sock.set_inheritable(True)
    return sock


def _remove_stale_unix_socket(path: Path) -> None:
    """Remove a socket file left by a crashed server, but never one still in use."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"Cannot listen on unix:{path}: the path exists and is not a socket.")
    if is_live(path):
        raise BindError(f"Cannot listen on unix:{path}: another server is listening there.")
    path.unlink(missing_ok=True)


def _adopt_fd(spec: BindSpec) -> socket.socket:
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise BindError(f"Cannot use {spec}: {exc.strerror or exc}.") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"Cannot use {spec}: it is not a stream socket.")
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        accepting = 0
    if not accepting:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _bind_failure(spec: BindSpec, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"Cannot listen on {spec}: the address is already in use by another process."
    if exc.errno == errno.EACCES:
        return f"Cannot listen on {spec}: permission denied (ports below 1024 need privileges)."
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"Cannot listen on {spec}: no network interface has that address."
    return f"Cannot listen on {spec}: {exc.strerror or exc}."


def describe(sock: socket.socket) -> str:
    """The address a listener really has (port 0 resolved), for logs."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def ensure_tcp_migrate_req() -> bool:
    """With --reuse-port each worker has its own accept queue; closing one drops
    its queued connections unless Linux may migrate them to a sibling
    (``net.ipv4.tcp_migrate_req``). Turn it on when allowed; report whether it is."""
    try:
        if TCP_MIGRATE_REQ.read_text().strip() == "1":
            return True
        TCP_MIGRATE_REQ.write_text("1\n")
    except OSError:
        return False
    return True
