"""The supervisor reads RSS from /proc itself; it must be psutil's number."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from supervisor.system import memory


def test_rss_is_psutils_rss() -> None:
    # Wait for the child to say it runs: right after fork/exec its /proc
    # entry can still describe the half-built process (statm says one page).
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        ours, theirs = memory.rss(child.pid), psutil.Process(child.pid).memory_info().rss
        assert ours is not None and abs(ours - theirs) <= 64 * 1024
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


def test_a_gone_process_has_no_rss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert memory.rss(child.pid) is None
    assert (memory.rss(os.getpid()) or 0) > 1024 * 1024
