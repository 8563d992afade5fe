"""The reference agent service: raw ASGI + msgspec, Redis Streams, Postgres.

``app.main:app`` is the ASGI callable; ``python -m app run`` starts it under the
supervisor, uvicorn or gunicorn with the same options.
"""

from __future__ import annotations

__version__ = "1.0.0"
