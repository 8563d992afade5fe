"""What the servers under comparison need from the test: certificates and an interpreter.

``Certs`` makes a CA, a server certificate for 127.0.0.1 and a client certificate with
trustme, readable by a worker that dropped to nobody. ``python_for`` finds an
interpreter whose standard library such a worker can still import.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.e2e.gunicorn_compare import Case


class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (trustme)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def make(cls, directory: Path) -> Certs:
        import trustme

        ca = trustme.CA()
        directory.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_pem.write_to_path(str(directory / "server.key"))
        server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        client = ca.issue_cert("client@corpus.test")
        client.private_key_and_cert_chain_pem.write_to_path(str(directory / "client.pem"))
        for path in [directory, *directory.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # a worker running as nobody reads them
        return cls(directory)

    def env(self) -> dict[str, str]:
        names = {"CERTFILE": "server.pem", "KEYFILE": "server.key", "CA_CERTS": "ca.pem"}
        return {key: str(self.directory / name) for key, name in names.items()}

    def client_context(self, with_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.directory / "ca.pem"))
        if with_cert:
            context.load_cert_chain(str(self.directory / "client.pem"))
        return context


_VENVS: dict[str, str] = {}


def python_for(case: Case) -> str:
    """An interpreter whose standard library a worker can still import after dropping root.

    A worker that switched to nobody imports lazily (uvicorn's protocol modules, the
    app). When this interpreter lives under /root (pyenv), nobody cannot read its
    stdlib, so use the system's interpreter of the same version with our site-packages.
    """
    if not case.drops_privileges or _world_readable(Path(sys.base_prefix)):
        return sys.executable
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None or not _world_readable(Path(system).resolve().parent):
        raise RuntimeError(f"no {version} outside {sys.base_prefix} that nobody can run")
    if version not in _VENVS:
        # A fresh directory per test process: a predictable path in /tmp could be planted.
        venv = Path(tempfile.mkdtemp(prefix="corpus-python-"))
        atexit.register(shutil.rmtree, venv, ignore_errors=True)
        venv.chmod(0o755)
        subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        site = next((venv / "lib").glob("python*/site-packages"))
        ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
        # addsitedir (not a bare path line) so that our .pth files, the editable install's, run.
        (site / "corpus-venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
        _VENVS[version] = str(venv / "bin" / "python")
    return _VENVS[version]


def _world_readable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in [path, *path.parents])
