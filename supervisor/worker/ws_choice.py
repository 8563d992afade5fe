"""The WebSocket protocol, imported at a worker's first upgrade instead of at boot.

uvicorn imports its WebSocket implementation when it loads its config:
websockets alone is ~60 modules and 2 MiB here, and it used to be imported
in the supervisor too, so that forked workers would share it. Most services
never see an upgrade; those that do pay its import (~15 ms on this machine)
once per worker, at the first one. What ``--ws`` means does not change:
"auto" still picks websockets, else wsproto, else no WebSockets (the
upgrade is refused, uvicorn's warning), and an implementation named but not
installed still fails the worker's boot with uvicorn's own error.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from uvicorn.config import WS_PROTOCOLS
from uvicorn.importer import import_from_string

# The packages each of uvicorn's names needs; any one of them for "auto".
_NEEDS = {
    "auto": ("websockets", "wsproto"),
    "websockets": ("websockets",),
    "websockets-sansio": ("websockets",),
    "wsproto": ("wsproto",),
}


class LazyProtocol:
    """Stands where uvicorn keeps the protocol class: called once per upgrade, like it."""

    __slots__ = ("protocol", "target")

    def __init__(self, target: str) -> None:
        self.target = target
        self.protocol: type[asyncio.Protocol] | None = None

    def __call__(self, **kwargs: Any) -> asyncio.Protocol:
        if self.protocol is None:
            chosen = import_from_string(self.target)
            if chosen is None:  # "auto", and the package we saw does not import after all
                raise RuntimeError(f"No WebSocket implementation importable for {self.target}")
            self.protocol = chosen
        return self.protocol(**kwargs)


def ws_protocol(ws: str) -> str | LazyProtocol:
    """What to give uvicorn's ``ws=``: the name itself where uvicorn must decide at boot
    (none, a custom import string, a package that is missing), else a lazy protocol."""
    needs = _NEEDS.get(ws)
    target = WS_PROTOCOLS.get(ws)
    if needs is None or target is None:
        return ws
    if not any(importlib.util.find_spec(name) is not None for name in needs):
        return ws
    return LazyProtocol(target)
