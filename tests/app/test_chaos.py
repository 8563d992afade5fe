"""The chaos run of loadtests/chaos_tasks.py, in its quick form: every task completes, no 500."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.private import PrivatePostgres, PrivateRedis
from tests.supervisor_process import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(
        not (PrivateRedis.available() and PrivatePostgres.available()),
        reason="needs redis-server and the Postgres server binaries",
    ),
]


@pytest.mark.timeout(300)
def test_quick_chaos_run_completes_every_accepted_task(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    script = REPO / "loadtests" / "chaos_tasks.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["accepted"] > 200
    assert report["done"] + report["failed"] == report["accepted"] and not report["stuck"]
    assert "500" not in report["responses"]
    assert any("Redis killed" in e for e in report["events"])
    assert any("Postgres restarted" in e for e in report["events"])
    assert sum("SIGKILL worker" in e for e in report["events"]) == 3
