"""The WebSocket implementation is imported at a worker's first upgrade, not at boot."""

from __future__ import annotations

import subprocess
import sys

from supervisor.worker.ws_choice import LazyProtocol, ws_protocol

WORKER_CONFIG_WITHOUT_WEBSOCKETS = """
import sys
from supervisor.config import Config
from supervisor.worker.main import uvicorn_config

async def app(scope, receive, send):
    pass

config = uvicorn_config(Config(app="x:app", ws=sys.argv[1]), app)
config.load()
print("websockets" in sys.modules, type(config.ws_protocol_class).__name__)
try:
    config.ws_protocol_class(config=config, server_state=None, app_state={})
except Exception:
    pass  # no event loop here: the import is what is checked
print("websockets" in sys.modules)
"""


def _load(ws: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", WORKER_CONFIG_WITHOUT_WEBSOCKETS, ws],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


def test_auto_and_named_implementations_are_lazy() -> None:
    for ws in ("auto", "websockets-sansio", "websockets"):
        assert isinstance(ws_protocol(ws), LazyProtocol), ws


def test_none_and_custom_import_strings_are_uvicorns_to_resolve() -> None:
    assert ws_protocol("none") == "none"
    assert ws_protocol("my.module:Proto") == "my.module:Proto"


def test_a_missing_package_is_left_to_uvicorns_boot_error() -> None:
    # wsproto is not a dependency: naming it keeps uvicorn's own import error at boot.
    try:
        import wsproto  # noqa: F401
    except ImportError:
        assert ws_protocol("wsproto") == "wsproto"


def test_a_worker_config_imports_websockets_only_at_the_first_upgrade() -> None:
    before, kind, after = _load("auto")
    assert (before, kind, after) == ("False", "LazyProtocol", "True")
