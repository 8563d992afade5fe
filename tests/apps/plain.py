"""An app that does not use prometheus_client: GET /imported says whether it got imported."""

from __future__ import annotations

import sys
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    imported = any(name.startswith("prometheus_client") for name in sys.modules)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"yes" if imported else b"no"})
