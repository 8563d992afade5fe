"""A worker serving --metrics-path asks its supervisor for the pool's metrics."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import msgspec
from anyio.abc import SocketAttribute

from supervisor.commands.wire import CLIENT_TIMEOUT, Request
from supervisor.system.unix import peer_credentials


async def fetch_metrics(path: Path) -> str:
    """The pool's metrics, from inside a worker's event loop; only from our supervisor."""
    with anyio.fail_after(CLIENT_TIMEOUT):
        async with await anyio.connect_unix(str(path)) as stream:
            raw = stream.extra(SocketAttribute.raw_socket)
            peer, _ = peer_credentials(raw)
            if peer != os.getppid():
                # Not our supervisor: someone else's server at that path.
                raise RuntimeError(f"{path} is served by process {peer}, not the supervisor")
            await stream.send(msgspec.json.encode(Request(command="metrics")) + b"\n")
            chunks = []
            try:
                while True:
                    chunks.append(await stream.receive())
            except anyio.EndOfStream:
                pass
    reply = msgspec.json.decode(b"".join(chunks))
    if not isinstance(reply, dict) or not isinstance(reply.get("metrics"), str):
        raise RuntimeError(f"unexpected reply from the supervisor: {reply!r}")
    text: str = reply["metrics"]
    return text
