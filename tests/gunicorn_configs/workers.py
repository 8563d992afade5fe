"""UvicornWorker subclasses as projects ship them in their own package (``myapp/workers.py``).

gunicorn's UvicornWorker hands ``CONFIG_KWARGS`` to ``uvicorn.Config`` after its own
keyword arguments, so every key here overrides what gunicorn derived from its settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class ProxyTrustingWorker(UvicornWorker):
    """Behind a load balancer whose address is not known in advance: trust every peer."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": "h11",
        "proxy_headers": True,
        "forwarded_allow_ips": "*",
    }


class QuietWorker(UvicornWorker):
    """The proxy logs requests already: no access log, no Server/Date headers."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "auto",
        "access_log": False,
        "server_header": False,
        "date_header": False,
    }
