"""Serve hello's app through the Python API, the way a ``uvicorn.run`` user would.

python -m tests.apps.run_api PORT object|string|factory [WORKERS]
"""

from __future__ import annotations

import sys

from supervisor.api import run
from tests.apps.hello import app, create_app

if __name__ == "__main__":
    port, mode = int(sys.argv[1]), sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    target = {"object": app, "string": "tests.apps.hello:app", "factory": create_app}[mode]
    run(
        target,
        host="127.0.0.1",
        port=port,
        workers=workers,
        factory=mode == "factory",
        timeout_graceful_shutdown=5,
        limit_max_requests=1000,
        log_level="info",
    )
