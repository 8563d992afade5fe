"""supervisord's PyPI package is also called ``supervisor``: installed beside us, it
overwrites and mixes files of the same import package. Said at start in one line (with
the fix) instead of failing somewhere inside with an ImportError or AttributeError.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

# Modules only supervisord ships in the ``supervisor`` package.
SUPERVISORD_FILES = ("supervisord.py", "supervisorctl.py", "rpcinterface.py", "xmlrpc.py")
FIX = (
    "pip uninstall -y supervisor asgi-supervisor && pip install asgi-supervisor, and run"
    " supervisord from its own environment (pipx, or the OS package)"
)


def describe(package_dir: Path, distributions: Iterable[str]) -> str | None:
    """The one-line problem, or None when only asgi-supervisor owns the package."""
    foreign = [name for name in SUPERVISORD_FILES if (package_dir / name).exists()]
    has_supervisord = "supervisor" in {name.lower() for name in distributions}
    if not foreign and not has_supervisord:
        return None
    what = f"its files ({', '.join(foreign)}) are in {package_dir}" if foreign else "installed"
    return (
        "supervisord's PyPI package 'supervisor' shares the import name 'supervisor' with"
        f" asgi-supervisor and is {what}: the two are mixed. Fix: {FIX}."
    )


def check_here() -> str | None:
    """This environment's verdict; a directory scan (importlib.metadata takes 150+ ms)."""
    package_dir = Path(__file__).resolve().parent.parent
    return describe(package_dir, _installed_supervisord())


def _installed_supervisord() -> list[str]:
    found = []
    for entry in sys.path:
        directory = Path(entry or ".")
        if entry and directory.is_dir():
            found += ["supervisor" for _ in directory.glob("[Ss]upervisor-*.dist-info")]
    return found
