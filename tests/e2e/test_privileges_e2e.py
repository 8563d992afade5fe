"""--user/--group/--umask (issue 17): the supervisor binds as root, workers run as the user.

Run as root (CI does): the workers switch after post_fork, with the user's groups; an
unknown user is one line and exit 2; a unix socket is made under the umask and given to
the user, as gunicorn does it.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest

from tests.e2e.gunicorn_setup import python_for
from tests.supervisor_process import REPO, free_port, run_cli, wait_for

APP = "tests.apps.hello:app"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges: needs root")


class Started:
    def __init__(self, args: list[str], workdir: Path) -> None:
        python = python_for(SimpleNamespace(drops_privileges=True))  # type: ignore[arg-type]
        self.log = workdir / "supervisor.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [python, "-m", "supervisor", APP, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def workers(self, count: int) -> list[psutil.Process]:
        def ready() -> list[psutil.Process] | None:
            assert self.proc.poll() is None, self.log.read_text()
            children = psutil.Process(self.proc.pid).children()
            text = self.log.read_text()
            serving = [c for c in children if f"Worker {c.pid} serving" in text]
            return serving if len(serving) == count else None

        return wait_for(ready, 20, "workers serving")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path (0700 under /tmp/pytest-of-root): nobody must reach the socket.
    directory = Path(tempfile.mkdtemp(prefix="privileges-"))
    directory.chmod(0o755)
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=False, timeout=30)


@as_root
def test_workers_run_as_the_user_with_its_groups_and_serve(workdir: Path) -> None:
    port = free_port()
    nobody = pwd.getpwnam("nobody")
    sup = Started(["-w", "2", "--port", str(port), "--user", "nobody"], workdir)
    try:
        workers = sup.workers(2)
        assert psutil.Process(sup.proc.pid).uids().effective == 0  # the supervisor stays root
        for worker in workers:
            assert worker.uids().real == worker.uids().effective == nobody.pw_uid
            assert worker.gids().effective == nobody.pw_gid
            groups = _groups(worker.pid)
            assert 0 not in groups and nobody.pw_gid in groups  # root's groups are gone
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        sup.stop()
    assert sup.proc.returncode == 0, sup.log.read_text()


@as_root
def test_a_unix_socket_is_made_under_the_umask_for_the_user(workdir: Path) -> None:
    path = workdir / "app.sock"
    sup = Started(["--uds", str(path), "--user", "nobody", "--umask", "0o007"], workdir)
    try:
        sup.workers(1)
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o770
        assert info.st_uid == pwd.getpwnam("nobody").pw_uid
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, timeout=5) as client:
            assert client.get("http://app/").status_code == 200
    finally:
        sup.stop()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--user", "no-such-user-i17"], "--user no-such-user-i17: no such user."),
        (["--user", "nobody", "--group", "no-such-group-i17"], "no such group"),
    ],
)
def test_an_unknown_user_or_group_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    result = run_cli(APP, "--port", "0", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr


def _groups(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("Groups:"))
    return {int(gid) for gid in line.split()[1:]}
